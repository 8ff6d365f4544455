"""A listing made before a start's or stop's own answer can reach the gateway after it (two
connections). The answer carries the listing version it is as new as; an older listing is then
skipped, so neither the routes nor the scheduler go back to what was true before."""

from __future__ import annotations

import asyncio

import httpx

from contract.listing import ModelState
from gateway.routes.orchestrated import OrchestratorRegistry
from support.listing import listing, status


def served(version: int, state: str) -> bytes:
    return listing(status("m", state, url="http://m:8080"), version=version).model_dump_json().encode()


def test_a_listing_older_than_an_applied_status_is_skipped():
    answers = [served(5, "stopped"), served(9, "stopped"), served(11, "ready")]
    heard = []

    async def scenario():
        registry = OrchestratorRegistry("http://orchestrator", "t")
        registry._client = httpx.AsyncClient(transport=httpx.MockTransport(
            lambda request: httpx.Response(200, content=answers.pop(0))))
        registry.on_listing = lambda body: heard.append(body.version)
        await registry._poll(after=None)  # the model is known, stopped
        registry.apply_status(status("m", "ready", url="http://m:8080", listing_version=10))
        await registry._poll(after=8)  # made before the start's answer, arriving after it
        state_after_stale = registry.route_table().resolve("m").state
        await registry._poll(after=9)
        return state_after_stale, registry.version
    stale_state, version = asyncio.run(scenario())
    assert stale_state is ModelState.READY  # not undone by the older listing
    assert heard == [5, 11] and version == 11  # the scheduler heard only the newer one


def test_a_listing_that_does_not_read_leaves_the_gateway_up_and_says_why():
    async def scenario():
        registry = OrchestratorRegistry("http://orchestrator", "t")
        registry._client = httpx.AsyncClient(transport=httpx.MockTransport(
            lambda request: httpx.Response(200, json={"version": 3, "models": "not a list"})))
        await registry.start()  # must not raise: the gateway starts and keeps asking
        error, synced = registry.error, registry.synced
        assert await registry.refresh("m") is None
        await registry.stop()
        return error, synced
    error, synced = asyncio.run(scenario())
    assert not synced and "does not read as expected" in error and "another version" in error
