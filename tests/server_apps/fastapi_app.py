"""A small FastAPI app: path/query params, a JSON body model, streaming, an upload."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

app = FastAPI()


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.get("/")
async def root() -> dict[str, str]:
    return {"message": "hello"}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None) -> dict[str, object]:
    if item_id == 404:
        raise HTTPException(status_code=404, detail="no such item")
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(item: Item) -> dict[str, object]:
    return {"created": item.model_dump(), "total": item.price * 2}


@app.get("/stream")
async def stream() -> StreamingResponse:
    async def generate() -> AsyncIterator[bytes]:
        for i in range(4):
            yield f"line {i}\n".encode()

    return StreamingResponse(generate(), media_type="text/plain")


@app.post("/upload")
async def upload(
    file: Annotated[UploadFile, File()], note: Annotated[str, Form()]
) -> dict[str, object]:
    data = await file.read()
    return {"filename": file.filename, "size": len(data), "note": note}
