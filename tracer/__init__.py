"""reqtrace: follow one HTTP request from the network card to the ASGI app and back."""

from __future__ import annotations

__version__ = "0.1.0"
