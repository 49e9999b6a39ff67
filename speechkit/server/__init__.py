"""``speechkit serve``: one process with the streaming WebSocket, OpenAI-compatible HTTP endpoints,
health, metrics and a browser page. Needs the ``serve`` extra (Starlette, uvicorn, python-multipart)."""
