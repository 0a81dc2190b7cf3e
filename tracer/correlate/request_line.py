"""What the first bytes of a request and of a response say, when no server hook tells.

In attach mode the kernel copies the first RT_HEAD_BYTES bytes a request's first read
returned and the first RT_STATUS_BYTES bytes its response's first send wrote (probes/
events.h). These pure functions read the HTTP/1.x request line and status code out of
them; anything else (TLS, HTTP/2, a truncated line) is said plainly, never guessed.
"""

from __future__ import annotations

from typing import NamedTuple

MAX_METHOD = 16  # longer tokens are not methods (WebDAV's are the longest, ~11)
TLS_RECORD = (0x16, 0x03)  # a TLS handshake record: ContentType 22, version 3.x
HTTP2_PREFACE = b"PRI * HTTP/2.0"


class RequestHead(NamedTuple):
    """The request line read from a request's captured first bytes."""

    method: str
    path: str
    query: str
    http_version: str  # "1.1", "1.0", or "" when the line was cut short
    requests_seen: int  # request lines in the bytes: more than 1 when pipelined
    problem: str  # why the line could not be read whole ("" when it was)


def _is_method(token: bytes) -> bool:
    return 0 < len(token) <= MAX_METHOD and token.isalpha() and token.isupper()


def parse_request_head(head: bytes, read_bytes: int) -> RequestHead:
    """The request line in `head`, the first bytes of a read that returned `read_bytes`."""
    if not head:
        return RequestHead("", "", "", "", 0, "its first bytes were not captured")
    if len(head) >= 2 and (head[0], head[1]) == TLS_RECORD:
        return RequestHead("", "", "", "", 1, "the connection is encrypted (TLS)")
    if head.startswith(HTTP2_PREFACE):
        return RequestHead("", "", "", "2", 1, "HTTP/2 (only HTTP/1.x request lines are read)")
    line, crlf, _ = head.partition(b"\n")
    line = line.rstrip(b"\r")
    parts = line.split(b" ")
    if not _is_method(parts[0]) or (len(parts) < 2 and crlf):
        return RequestHead("", "", "", "", 0, "its first bytes are not an HTTP request line")
    method = parts[0].decode("ascii")
    target = parts[1].decode("latin-1") if len(parts) > 1 else ""
    version = ""
    if crlf and len(parts) == 3 and parts[2].startswith(b"HTTP/"):
        version = parts[2][5:].decode("latin-1")
    problem = ""
    if not crlf:
        cut = len(head) < read_bytes
        problem = (
            f"the request line is longer than the {len(head)} bytes captured: the path is cut"
            if cut
            else "the request line was cut short by the client"
        )
    path, _, query = target.partition("?")
    return RequestHead(method, path, query, version, 1 + _pipelined(head), problem)


def _pipelined(head: bytes) -> int:
    """Further request lines after the end of the first request's headers in `head`."""
    count = 0
    at = head.find(b"\r\n\r\n")
    while at >= 0:
        rest = head[at + 4 :]
        token = rest.split(b" ", 1)[0]
        if not rest or not (_is_method(token) or (len(rest) < MAX_METHOD and rest.isupper())):
            break
        count += 1
        at = head.find(b"\r\n\r\n", at + 4)
    return count


def parse_status(head: bytes) -> int:
    """The status code of a captured status line ("HTTP/1.1 200 OK..."), 0 if none."""
    if not head.startswith(b"HTTP/") or len(head) < 12:
        return 0
    space = head.find(b" ")
    code = head[space + 1 : space + 4]
    if space < 0 or len(code) != 3 or not code.isdigit():
        return 0
    return int(code)
