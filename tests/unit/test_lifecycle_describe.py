"""/status's scheduler view as `llamadock ps` reads it: the idle time the ttl counts from, the
context and slots, and that the whole of it reads back into the contract's typed status."""

from __future__ import annotations

from cli.ps import until_unload
from contract.status import GatewayStatus
from gateway.gpu import GIB
from test_gpu import FakeNvml, fake_gpu
from test_lifecycle_gpu import Orchestrator, lifecycle, listed, settle, _mem


async def test_idle_time_context_and_slots_for_ps(tmp_path, clock):
    model = listed("q", ctx_size=8192, parallel=2, ttl=300)
    life = await lifecycle(tmp_path, FakeNvml([fake_gpu(uuid="GPU-a", memory=_mem(24 * GIB, 0))]), Orchestrator(),
                           clock, [model])
    view = life.describe().models["q"]
    assert (view.ctx_size, view.parallel, view.idle_s) == (8192, 2, None)  # stopped: no countdown
    ticket = life.request("q")
    await settle(life)
    await ticket.wait()
    assert life.describe().models["q"].idle_s is None  # busy: the ttl starts after the last request
    ticket.release()
    clock.now += 42.5
    view = life.describe().models["q"]
    assert view.idle_s == 42.5
    # What the CLI reads is what the gateway serves: through JSON and back.
    served = GatewayStatus(models=[{"id": "q", "state": "ready"}], gpu={"available": True}, scheduler=life.describe())
    status = GatewayStatus.model_validate_json(served.model_dump_json())
    scheduled = status.scheduler.models["q"]
    assert status.on_gpus and scheduled.placement.gpus == [0]
    assert until_unload(scheduled) == "4m18s"


async def test_each_models_node_and_whether_the_backend_has_several(tmp_path, clock):
    from contract.listing import HostInfo, InstanceInfo, InstanceState
    from support.listing import listing

    running = listed("q", state="ready").model_copy(update={"instance": InstanceInfo(
        id="abc", name="llamadock-model-q", node="box2", state=InstanceState.RUNNING)})
    life = await lifecycle(tmp_path, FakeNvml([fake_gpu(uuid="GPU-a", memory=_mem(24 * GIB, 0))]), Orchestrator(),
                           clock, [running, listed("idle")])
    view = life.describe()
    assert (view.models["q"].node, view.models["idle"].node, view.several_nodes) == ("box2", None, False)
    swarm = listing(running, listed("idle"), version=2).model_copy(update={"host": HostInfo(kind="swarm-linux")})
    life.on_listing(swarm)
    assert life.describe().several_nodes
