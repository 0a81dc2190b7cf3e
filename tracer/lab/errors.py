"""The one exception the lab raises: its message is a single sentence a user can act on."""

from __future__ import annotations

import os


class LabError(RuntimeError):
    """The lab cannot be built, used or validated; str(error) is one sentence."""


def require_root() -> None:
    """Namespaces, veths and qdiscs need CAP_NET_ADMIN and CAP_SYS_ADMIN: in practice root."""
    if os.geteuid() != 0:
        raise LabError("root is needed to manage network namespaces; run it with sudo")
