"""Request traces for dashboard tests: built by hand (dashboards/synthetic.py), re-exported."""

from __future__ import annotations

from dashboards.synthetic import BASE_NS, make_trace

__all__ = ["BASE_NS", "make_trace"]
