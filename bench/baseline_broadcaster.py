"""The minimal broadcaster the fan-out figures are compared with.

A bare Starlette app on sse-starlette: ``GET /events`` subscribes (one queue each, one
first frame), ``POST /publish?id=N&size=B`` pushes one pre-encoded frame to every queue.
No auth, no store, no history: the floor that the gateway's overhead is measured from.

    python -m bench.baseline_broadcaster PORT
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import uvicorn
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

queues: set[asyncio.Queue[bytes]] = set()


async def events(request: Request) -> EventSourceResponse:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    queues.add(queue)

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield b"event: hello\nid: 0\ndata: {}\n\n"
            while True:
                yield await queue.get()
        finally:
            queues.discard(queue)

    return EventSourceResponse(frames(), ping=15)


async def publish(request: Request) -> Response:
    event_id = int(request.query_params["id"])
    payload = b"x" * int(request.query_params.get("size", "100"))
    frame = b'event: project.put\nid: %d\ndata: {"p":"%s"}\n\n' % (event_id, payload)
    for queue in queues:
        queue.put_nowait(frame)
    return Response(status_code=204)


async def healthz(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(
    routes=[
        Route("/events", events),
        Route("/publish", publish, methods=["POST"]),
        Route("/healthz", healthz),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
