"""ASGI apps the server tests run: raw ASGI, lifespan variants, FastAPI and Starlette."""
