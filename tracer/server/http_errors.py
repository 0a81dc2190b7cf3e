"""Status lines and the canned responses the server sends on its own behalf.

The server answers some requests without asking the app: malformed input (400), a request
target over the limit (414), oversize headers (431), a slow client (408), an unsupported
HTTP version (505) or feature (501), overload (503), and an app that failed before it
responded (500). All of them close the connection: after bad input the byte stream can no
longer be trusted, and after an overload the client should back off.
"""

from __future__ import annotations

import http


def _status_phrase(code: int) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return ""


STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, _status_phrase(code).encode("ascii"))
    for code in range(200, 600)
}
"""Final status codes the app may send; 1xx are not final responses, so not here."""

CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"

ERROR_TEXT: dict[int, bytes] = {
    400: b"Bad Request",
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    503: b"Service Unavailable",
    505: b"HTTP Version Not Supported",
}


def error_response(status: int, default_head: bytes, detail: str = "") -> bytes:
    """A complete `connection: close` response for `status`, with the Date/Server lines.

    `detail` (ASCII, one line) replaces the reason phrase as the body, so a person looking at
    the reply with curl sees why ("Missing Host header") rather than only "Bad Request".
    """
    body = (detail or ERROR_TEXT.get(status, b"Error").decode()).encode("ascii", "replace")
    body += b"\n"
    return b"".join(
        (
            STATUS_LINES[status],
            default_head,
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body),
            body,
        )
    )
