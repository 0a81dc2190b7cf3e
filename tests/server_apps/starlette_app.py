"""A small Starlette app: routing, JSON, a streaming response, an upload, lifespan state."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
    yield {"greeting": "hello from lifespan"}


async def homepage(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.state.greeting)


async def user(request: Request) -> JSONResponse:
    return JSONResponse({"user": request.path_params["name"], "q": request.query_params.get("q")})


async def echo_json(request: Request) -> JSONResponse:
    payload = await request.json()
    return JSONResponse({"received": payload})


async def numbers(request: Request) -> StreamingResponse:
    async def generate() -> AsyncIterator[bytes]:
        for i in range(5):
            yield b"%d\n" % i

    return StreamingResponse(generate(), media_type="text/plain")


async def upload(request: Request) -> JSONResponse:
    form = await request.form()
    upload = form["file"]
    assert not isinstance(upload, str)
    data = await upload.read()
    return JSONResponse({"filename": upload.filename, "size": len(data), "field": form["note"]})


app = Starlette(
    routes=[
        Route("/", homepage),
        Route("/users/{name}", user),
        Route("/echo", echo_json, methods=["POST"]),
        Route("/numbers", numbers),
        Route("/upload", upload, methods=["POST"]),
    ],
    lifespan=lifespan,
)
