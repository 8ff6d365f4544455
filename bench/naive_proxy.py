"""The proxy most people would write first: FastAPI + httpx, ``StreamingResponse(aiter_raw())``.

    python bench/naive_proxy.py UPSTREAM_URL LISTEN_PORT

A reference point for the benchmarks, not part of llamadock: it shows what a
straightforward Python relay costs per streamed token on the same machine.
"""

from __future__ import annotations

import sys

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

UPSTREAM = sys.argv[1].rstrip("/")
app = FastAPI()
client = httpx.AsyncClient(base_url=UPSTREAM, timeout=None)


@app.post("/v1/{path:path}")
async def relay(path: str, request: Request) -> StreamingResponse:
    upstream = client.build_request("POST", f"/v1/{path}", content=await request.body(),
                                    headers={"content-type": "application/json"})
    response = await client.send(upstream, stream=True)
    return StreamingResponse(response.aiter_raw(), status_code=response.status_code,
                             media_type=response.headers.get("content-type"),
                             background=BackgroundTask(response.aclose))


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
