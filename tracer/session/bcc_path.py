"""Find the distribution's BCC from any Python environment reqtrace is installed in.

BCC's Python module is not on PyPI (the "bcc" there is another project): distributions
ship it for their own Python (Debian: python3-bpfcc, in /usr/lib/python3/dist-packages).
It is pure Python over libbcc.so (ctypes), so any Python 3 can use it. scripts/setup links
it into reqtrace's own virtualenv; when reqtrace is `pip install`ed into a user's virtualenv
instead, `lend_system_bcc()` makes `import bcc` find the system copy, and nothing else of
the system's packages.
"""

from __future__ import annotations

import glob
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

SYSTEM_BCC_GLOBS = (
    "/usr/lib/python3/dist-packages/bcc",  # Debian, Ubuntu
    "/usr/lib/python3*/site-packages/bcc",  # Fedora, Arch
    "/usr/lib64/python3*/site-packages/bcc",
    "/usr/local/lib/python3*/dist-packages/bcc",  # built from source
)


class _SystemBcc(importlib.abc.MetaPathFinder):
    """Finds the top-level package `bcc` in one directory (its submodules follow __path__)."""

    def __init__(self, package: Path) -> None:
        self.package = package

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "bcc":
            return None
        return importlib.util.spec_from_file_location(
            "bcc",
            self.package / "__init__.py",
            submodule_search_locations=[str(self.package)],
        )


def lend_system_bcc() -> str:
    """Make `import bcc` work with the system's BCC if it does not already; where it is."""
    if importlib.util.find_spec("bcc") is not None:
        return ""
    for pattern in SYSTEM_BCC_GLOBS:
        for found in sorted(glob.glob(pattern)):
            package = Path(found)
            if (package / "__init__.py").is_file():
                sys.meta_path.append(_SystemBcc(package))
                return str(package)
    return ""
