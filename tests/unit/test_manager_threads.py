"""A backend's blocking calls run in threads (the Docker SDK's do); what those threads report
(a change: refresh soon, an instance no longer ready) belongs to the event loop, so the manager
hands it over (`call_soon_threadsafe`). asyncio's debug mode raises when a thread touches a
loop object directly: these tests run on a loop in debug mode. (Each on its own loop,
closed without waiting for its tasks: a waiter whose wake-up a thread lost would hang.)"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from orchestrator.backends.docker.host import HostFacts
from orchestrator.backends.docker.runtime import DockerRuntime
from orchestrator.backends.runtime import Change
from orchestrator.manager import ModelManager
from orchestrator.settings import OrchestratorSettings


class NoContainers:
    """The Docker client at its narrowest seam: a project with no model container."""

    containers = SimpleNamespace(list=lambda **_: [])


@pytest.fixture
def manager() -> ModelManager:
    settings = OrchestratorSettings(admin_token="t")
    runtime = DockerRuntime(NoContainers(), settings, SimpleNamespace(project="p", network="n"), HostFacts(gpu=False))
    return ModelManager(runtime, settings)


def run_in_debug_loop(scenario) -> None:
    loop = asyncio.new_event_loop()
    loop.set_debug(True)
    try:
        loop.run_until_complete(asyncio.wait_for(scenario(), 5))
    finally:
        loop.close()


async def parked_on_kick(manager: ModelManager) -> asyncio.Future:
    manager._bind_loop()
    woken = asyncio.ensure_future(manager.live._kick.wait())
    await asyncio.sleep(0)  # the waiter is parked on the event
    return woken


def test_kick_from_a_thread_wakes_the_refresh_loop(manager):
    async def scenario():
        woken = await parked_on_kick(manager)
        await asyncio.to_thread(manager.kick)
        await asyncio.wait_for(woken, 2)
    run_in_debug_loop(scenario)


def test_kick_on_the_loop_is_immediate(manager):
    async def scenario():
        manager._bind_loop()
        manager.kick()
        assert manager.live._kick.is_set()
    run_in_debug_loop(scenario)


def test_forget_ready_from_a_thread_is_applied_on_the_loop(manager):
    async def scenario():
        manager._bind_loop()
        manager.records.mark_ready("tiny", "abc")
        await asyncio.to_thread(manager.forget_ready, "abc")
        await asyncio.sleep(0)  # the handed-over call runs on the next loop turn
        assert not manager.records.is_ready("tiny", "abc")
    run_in_debug_loop(scenario)


def test_a_change_reported_from_a_thread_forgets_readiness_and_kicks_on_the_loop(manager):
    async def scenario():
        woken = await parked_on_kick(manager)
        manager.records.mark_ready("tiny", "abc")
        await asyncio.to_thread(manager.runtime._changed, Change("abc", down=True))  # the event watcher's thread
        await asyncio.wait_for(woken, 2)
        assert not manager.records.is_ready("tiny", "abc")
    run_in_debug_loop(scenario)


def test_removing_a_container_in_a_thread_kicks_through_the_loop(manager):
    async def scenario():
        woken = await parked_on_kick(manager)
        await manager.runtime.remove("tiny")  # the SDK's calls, and the change they report, in a thread
        await asyncio.wait_for(woken, 2)
    run_in_debug_loop(scenario)
