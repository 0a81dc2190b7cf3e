"""Rules for a request head the server refuses before any app sees it.

The common, valid request is checked inline in `HttpProtocol.on_headers_complete` (it is
the hot path); what lives here is the vocabulary of refusal (`RejectRequest`) and the
checks that only run for unusual requests: Transfer-Encoding values, absolute-form or
asterisk targets, the exact size of a head that may be over the limit, and Host values
not seen before.
"""

from __future__ import annotations

import re

import httptools

# RFC 9110 7.2 / RFC 3986 3.2.2: Host = uri-host [ ":" port ], uri-host = IP-literal /
# IPv4address / reg-name. The IP-literal is checked loosely (what brackets may hold), the
# rest exactly: no spaces, "/", "@", "?", "#", controls or non-ASCII. Empty is valid (RFC
# 9110 7.2: the target has no authority).
_HOST = re.compile(
    rb"(?:\[[0-9A-Za-z:._~%!$&'()*+,;=-]+\]|[0-9A-Za-z._~%!$&'()*+,;=-]*)(?::[0-9]*)?"
)
VALID_HOSTS: set[bytes] = set()
"""Host values already checked, so a valid Host costs one set lookup per request."""
_VALID_HOSTS_MAX = 1024  # bounded: clients inventing hosts cannot grow it forever


class RejectRequest(Exception):
    """Stop parsing and answer `status` ourselves (raised inside parser callbacks too)."""

    def __init__(
        self, status: int, detail: str, outcome: str = "bad_request", reason: str = ""
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail  # one line for the response body and the log
        self.outcome = outcome  # RequestTiming.outcome
        self.reason = reason or outcome  # ConnectionClosed.reason
        self.recorded = False  # its RequestTiming was already emitted


def check_transfer_encoding(value: bytes) -> None:
    """RFC 9112 6.1/6.3: chunked must come last (else 400); other codings we lack: 501."""
    codings = [coding.strip() for coding in value.lower().split(b",")]
    if codings[-1] != b"chunked":
        raise RejectRequest(400, "Transfer-Encoding must end with chunked")
    if len(codings) > 1:
        raise RejectRequest(501, "Unsupported Transfer-Encoding")


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """Path and query of an absolute-form ("http://host/p?q"), "*" or fragment target."""
    if target == b"*":
        return b"*", b""
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        raise RejectRequest(400, "Invalid request target") from None
    return url.path or b"/", url.query or b""


def head_size(target: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """Bytes of the request line and header lines, from what the parser handed us."""
    size = len(target) + 16  # method, spaces, version, CRLFs
    for name, value in headers:
        size += len(name) + len(value) + 4
    return size


def check_host(value: bytes) -> None:
    """RFC 9112 3.2: a Host field value that is not uri-host [":" port] is a 400."""
    if _HOST.fullmatch(value) is None:
        raise RejectRequest(400, "Invalid Host header")
    if len(VALID_HOSTS) < _VALID_HOSTS_MAX:
        VALID_HOSTS.add(value)
