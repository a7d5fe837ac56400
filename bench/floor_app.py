"""The floor: a bare ASGI app that reads the body and returns labelbridge's /predict answer for
one task, as fixed bytes. Served by uvicorn with uvloop and httptools, like labelbridge."""

from __future__ import annotations

from typing import Any

import orjson

ANSWER = orjson.dumps(
    {
        "results": [
            {
                "result": [
                    {
                        "from_name": "sentiment",
                        "to_name": "text",
                        "type": "choices",
                        "value": {"choices": ["Positive"]},
                        "score": 0.9,
                    }
                ],
                "score": 0.9,
                "model_version": "trivial-v0",
            }
        ],
        "model_version": "trivial-v0",
    }
)
HEALTH = b'{"status":"UP"}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:  # read the whole body, as any real server must
        message = await receive()
        more = message.get("more_body", False)
    body = HEALTH if scope["path"] in ("/", "/health") else ANSWER
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
