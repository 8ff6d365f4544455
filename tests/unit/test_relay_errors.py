"""Errors the relay answers itself, before any byte of an answer: always in OpenAI's format
with their own status, never a 500 (a route with no address, an upstream that refuses)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.routes.table import ModelRoute, ModelState, RouteTable
from gateway.settings import GatewaySettings
from support.net import free_port


class OneRoute:
    """The registry seam: one model the gateway believes ready."""

    synced = current = True
    error = file_error = None

    def __init__(self, url: str | None) -> None:
        self.route = ModelRoute(name="m", url=url, state=ModelState.READY)
        self.refreshed = 0

    def route_table(self) -> RouteTable:
        return RouteTable.of([self.route])

    async def refresh(self, name: str) -> ModelRoute:
        self.refreshed += 1
        return self.route

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@pytest.mark.parametrize("url, words", [
    (None, "no network address"),  # reached by IP: a restarting or disconnected container has none
    ("http://127.0.0.1:{port}", "cannot connect"),  # nothing listens there (a real closed port)
])
def test_an_unreachable_model_is_a_503_to_retry_and_its_view_is_refreshed(tmp_path: Path, url, words):
    registry = OneRoute(url and url.format(port=free_port()))
    app = create_app(GatewaySettings(upstreams_file=tmp_path / "none.yaml"), registry=registry)
    with TestClient(app) as client:
        for stream in (False, True):
            answer = client.post("/v1/chat/completions", json={"model": "m", "messages": [], "stream": stream})
            assert answer.status_code == 503 and answer.headers["retry-after"] == "2", answer.text
            error = answer.json()["error"]
            assert error["code"] == "upstream_unreachable" and words in error["message"]
    assert registry.refreshed >= 1
