"""A FastAPI app for the runs under uvicorn and gunicorn: it sleeps a known time, says who
served it (the worker's pid), and takes a JSON body."""

from __future__ import annotations

import asyncio
import os

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class Item(BaseModel):
    name: str
    price: float


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/sleep")
async def sleep(ms: float) -> dict[str, float]:
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms}


@app.get("/pid")
async def pid() -> dict[str, int]:
    return {"pid": os.getpid()}


@app.post("/items")
async def create(item: Item) -> dict[str, float]:
    return {"total": item.price * 2}
