"""A minimal asyncio HTTP/1.1 responder for probe tests (epoll + recv + send, nothing else).

Usage: python tiny_http_server.py HOST PORT
Prints "READY <port> <pid>" once listening. Answers every request that ends with a blank line;
"GET /big" gets a 4 MiB body (several send syscalls), "Connection: close" closes after it.
"""

from __future__ import annotations

import asyncio
import os
import sys

SMALL = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
BIG_BODY = b"x" * (4 << 20)
BIG = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BIG_BODY) + BIG_BODY


class Responder(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            request, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.transport.write(BIG if request.startswith(b"GET /big") else SMALL)
            if b"connection: close" in request.lower():
                self.transport.close()
                return


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Responder, host, port)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound} {os.getpid()}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
