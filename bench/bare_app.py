"""The bare FastAPI endpoint the read figures are compared with: the same bytes, from memory.

python -m bench.bare_app PORT FILE   (FILE holds the JSON body to serve)
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Response

app = FastAPI()
BODY = Path(sys.argv[2]).read_bytes() if len(sys.argv) > 2 else b"{}"


@app.get("/v1/config/projects/{project}")
async def project(project: str) -> Response:
    return Response(BODY, media_type="application/json", headers={"ETag": '"1"'})


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b"ok")


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
