"""Every name a lab uses, derived from its prefix, so teardown needs nothing but the prefix.

A crashed `lab up`, a SIGKILLed forwarder or a lost state file must never leave things that
`lab down --prefix P` cannot find: all namespaces and devices are named `<prefix>-...`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tracer.lab.errors import LabError

IFNAMSIZ = 15  # the kernel's limit on device names (16 bytes with the NUL)
_PREFIX = re.compile(r"[a-z][a-z0-9]*")
_LONGEST_SUFFIX = len("-srv")


@dataclass(frozen=True)
class LabNames:
    """Namespaces and devices of the lab called `prefix`."""

    prefix: str

    def __post_init__(self) -> None:
        limit = IFNAMSIZ - _LONGEST_SUFFIX
        if not _PREFIX.fullmatch(self.prefix) or len(self.prefix) > limit:
            raise LabError(
                f"the lab prefix must be a lowercase letter then letters or digits, at most "
                f"{limit} characters (device names are limited to {IFNAMSIZ}), "
                f"not {self.prefix!r}"
            )

    @property
    def client_netns(self) -> str:
        return f"{self.prefix}-client"

    @property
    def router_netns(self) -> str:
        return f"{self.prefix}-router"

    @property
    def server_device(self) -> str:
        """The root-namespace veth: the server host's side of the link."""
        return f"{self.prefix}-srv"

    @property
    def client_device(self) -> str:
        """The client namespace's veth."""
        return f"{self.prefix}-cli"

    @property
    def router_server_device(self) -> str:
        """The router's veth facing the server (peer of server_device in delay-line mode)."""
        return f"{self.prefix}-r0"

    @property
    def router_client_device(self) -> str:
        """The router's veth facing the client (peer of client_device in delay-line mode)."""
        return f"{self.prefix}-r1"
