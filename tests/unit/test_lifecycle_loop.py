"""The lifecycle's background loop on a real clock: it sleeps until a tick can matter
(scheduler.next_tick) rather than ticking four times a second, and an event that brings a
deadline forward wakes it. The orchestrator's API is an httpx mock transport; no GPU."""

from __future__ import annotations

import httpx

from gateway.gpu import NvmlReader
from gateway.scheduling.lifecycle import Lifecycle
from gateway.scheduling.inputs import Defaults
from gateway.metrics import GatewayMetrics
from gateway.scheduling.scheduler import KeepAlive, Tick
from support.waiting import wait_until_async
from support.listing import listing, status
from test_gpu import FakeNvml


def listed(name, state, ttl=None):
    return status(name, state, ttl=ttl)


async def running_lifecycle(models, stops):
    def orchestrator(request: httpx.Request) -> httpx.Response:
        name, verb = request.url.path.split("/")[2:4]
        if verb == "stop":
            stops.append(name)
        return httpx.Response(200, content=listed(name, "stopped" if verb == "stop" else "ready").model_dump_json())

    client = httpx.AsyncClient(transport=httpx.MockTransport(orchestrator))
    life = Lifecycle(client, "http://orchestrator", Defaults(state_dir=None),
                     NvmlReader(FakeNvml([], init_error=FakeNvml.NVMLError(9))), GatewayMetrics())
    life.on_listing(listing(*models))
    ticks = []
    real = life.dispatch
    life.dispatch = lambda event: (ticks.append(event) if isinstance(event, Tick) else None, real(event))[1]
    await life.start()
    return life, ticks


async def test_the_loop_wakes_for_a_ttl_expiry_and_stops_the_idle_model():
    stops: list[str] = []
    life, ticks = await running_lifecycle([listed("a", "ready", ttl=0.3)], stops)
    began = life.clock()
    await wait_until_async(lambda: stops == ["a"], 5, "a stopped")
    assert life.clock() - began >= 0.3
    await life.stop()


async def test_an_idle_box_is_not_ticked_until_an_event_brings_a_deadline():
    stops: list[str] = []
    life, ticks = await running_lifecycle([listed("a", "ready"), listed("b", "stopped")], stops)
    await wait_until_async(lambda: len(ticks) >= 1, 5, "the first tick")  # the first pass reads NVML and ticks once
    # Nothing is due (no ttl, nothing waits): a keep_alive of 0.2 s is the event that makes one due.
    first = len(ticks)
    life.dispatch(KeepAlive("a", 0.2, life.clock()))
    await wait_until_async(lambda: stops == ["a"], 5, "a stopped")
    assert len(ticks) - first <= 3  # woken for the expiry, not polled meanwhile
    await life.stop()


async def test_the_nvml_reading_is_published_for_gpu_and_status_while_fresh():
    class Clock:
        now = 100.0

        def __call__(self):
            return self.now

    clock = Clock()
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200, json={})))
    life = Lifecycle(client, "http://orchestrator", Defaults(state_dir=None),
                     NvmlReader(FakeNvml([], init_error=FakeNvml.NVMLError(9))), GatewayMetrics(), clock=clock)
    assert life.recent_reading() is None  # nothing read yet: /gpu reads for itself
    life._read_gpu()
    assert life.recent_reading() is life.reading[0] and life.reading[0].available is False
    clock.now += 10  # older than the loop's interval: not served as current
    assert life.recent_reading() is None


async def test_a_stop_whose_connection_broke_is_sent_again_not_taken_for_done():
    # An idle connection the orchestrator's server was closing: "server disconnected". Taking
    # that stop for done started the swap rival beside a server still running.
    sent = []

    def orchestrator(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        if len(sent) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return httpx.Response(200, content=listed("a", "stopped").model_dump_json())

    life = Lifecycle(httpx.AsyncClient(transport=httpx.MockTransport(orchestrator)), "http://orchestrator",
                     Defaults(state_dir=None), NvmlReader(FakeNvml([], init_error=FakeNvml.NVMLError(9))),
                     GatewayMetrics())
    life.on_listing(listing(listed("a", "ready")))
    await life._stop("a", {})
    assert sent == ["/models/a/stop", "/models/a/stop"]


async def test_a_ready_model_lost_with_its_node_ends_what_it_serves_and_is_started_again():
    from contract.listing import InstanceInfo, InstanceState

    starts: list[str] = []

    def orchestrator(request: httpx.Request) -> httpx.Response:
        name, verb = request.url.path.split("/")[2:4]
        if verb == "start":
            starts.append(name)
        return httpx.Response(200, content=listed(name, "ready").model_dump_json())

    client = httpx.AsyncClient(transport=httpx.MockTransport(orchestrator))
    life = Lifecycle(client, "http://orchestrator", Defaults(state_dir=None),
                     NvmlReader(FakeNvml([], init_error=FakeNvml.NVMLError(9))), GatewayMetrics())
    life.on_listing(listing(listed("a", "ready")))
    serving = life.request("a")
    await serving.wait()
    ended: list[str] = []
    serving.on_lost = ended.append
    lost = listed("a", "failed").model_copy(update={
        "reason": "its node box3 cannot be reached", "instance": InstanceInfo(id="s", name="x", node="box3",
                                                                             state=InstanceState.LOST)})
    life.on_listing(listing(lost))
    assert ended == ["its node box3 cannot be reached"]  # the exchange ends its answer with a 503
    serving.release()
    await wait_until_async(lambda: starts == ["a"], 5, "a started again")
    life.on_listing(listing(lost))  # the same listing again: not a second loss
    await life.stop()
    assert starts == ["a"]
