"""Several nodes without GPUs (a swarm of CPU boxes): each node's memory budget is a pool, a model
goes on the one it fits best, never on a node whose models directory lacks its file, and a 503
names each node and what it lacks. Then a node is lost: its model is placed again where it fits."""

from __future__ import annotations

from contract.listing import InstanceInfo, InstanceState
from contract.placement import Placement as WirePlacement
from contract.pools import LOCAL_NODE, Pool, PoolId
from gateway.scheduling.inputs import Defaults, State, demand_of, lost_with_node, sync_event
from gateway.scheduling.placement import Demand, Placement, explain, place, start_body
from gateway.scheduling.scheduler import Admit, Arrive, Finish, Phase, Reject, Released, Start, Started, Stop, Stopped, step
from support.listing import listing as listed_models
from support.listing import status

MiB = 2**20
BUDGETS = {"budget": 150 * MiB, "node2/budget": 150 * MiB, "node3/budget": 150 * MiB}


def budget(node: str, total: int) -> Pool:
    return Pool(id=PoolId(node=node), total_bytes=total)


def listed_budgets(**totals: int) -> list[Pool]:
    return [budget(node, total) for node, total in totals.items()]


def test_a_nodes_memory_budget_is_placed_best_fit_and_goes_on_the_wire_as_the_node_without_gpus():
    demand = Demand(100 * MiB, {}, tuple(BUDGETS))
    assert place(demand, BUDGETS) == Placement({"budget": 100 * MiB})  # a tie: the first node (the manager)
    roomier = {**BUDGETS, "budget": 300 * MiB}
    assert place(demand, roomier) == Placement({"node2/budget": 100 * MiB})  # best fit leaves the big hole
    # Never split across nodes' memory: 200 MiB in 150 + 150 is not one process.
    assert place(Demand(200 * MiB, {}, tuple(BUDGETS)), BUDGETS) is None
    wire = Placement({"node2/budget": 100 * MiB}).wire()
    assert wire == WirePlacement(node="node2", gpus=()) and wire.pools == ("node2/budget",)
    assert start_body(wire) == {"node": "node2", "gpus": [], "tensor_split": None}


def test_on_several_budgets_a_model_gets_a_demand_without_the_nodes_that_lack_its_file():
    model = status("q", need_bytes=100 * MiB)
    assert demand_of(model, list(BUDGETS), "all", {}) == Demand(100 * MiB, {}, tuple(BUDGETS))
    missing = model.model_copy(update={"absent_on": {"node3": "no m.gguf in its models directory"}})
    assert demand_of(missing, list(BUDGETS), "all", {}) == Demand(
        100 * MiB, {}, ("budget", "node2/budget"), {"node3": "no m.gguf in its models directory"})
    # One box's budget (LLAMADOCK_MEMORY_BUDGET): a fixed need there, as before nodes.
    assert demand_of(model, ["budget"], "all", {}) is None
    # On GPUs, the GPUs of a node without the file are left out too.
    on_gpus = status("g", need_bytes=4 * 2**30).model_copy(update={"absent_on": {"node2": "no m.gguf"}})
    demand = demand_of(on_gpus, ["gpu0", "node2/gpu0"], "all", {})
    assert demand.pools == ("gpu0",) and demand.absent == {"node2": "no m.gguf"}


def test_the_503_names_each_node_and_what_it_lacks():
    demand = Demand(100 * MiB, {}, ("budget", "node2/budget"), {"node3": "no m.gguf in its models directory"})
    text = explain(demand, {"budget": 60 * MiB, "node2/budget": 30 * MiB})
    assert text == ("it needs 100 MiB of one node's memory (node3: no m.gguf in its models directory; "
                    "budget: 40 MiB short (60 MiB free); node2: 70 MiB short (30 MiB free))").replace(
        "budget: 40", "local: 40")
    nowhere = Demand(100 * MiB, {}, (), {"node2": "no m.gguf", "node3": "no m.gguf"})
    assert explain(nowhere, {}) == "no node can run it (node2: no m.gguf; node3: no m.gguf)"


def three_models_on_three_nodes(pinned: bool = False):
    models = [status(n, need_bytes=100 * MiB, pinned=pinned) for n in ("a", "b", "c")]
    sync = sync_event(listed_models(*models), None, State(), Defaults(), {}, {}, 0.0, True,
                      listed_budgets(local=150 * MiB, node2=150 * MiB, node3=150 * MiB))
    s, actions = step(State(), sync)
    placed = {}
    for rid, name in enumerate(("a", "b", "c"), start=1):
        s, actions = step(s, Arrive(rid, name, 1.0))
        (start,) = [a for a in actions if isinstance(a, Start)]
        placed[name] = start.placement.wire().node
        s, _ = step(s, Started(name, 2.0))
        s, _ = step(s, Finish(rid, name, 2.5, 0.5))
    return s, placed, models


def test_three_models_that_fit_one_per_node_land_on_three_nodes():
    _, placed, _ = three_models_on_three_nodes()
    assert sorted(placed.values()) == ["local", "node2", "node3"]


def lose_node3(s, placed, models):
    """node3 gone: its pool leaves the listing, its model is failed (its node cannot be reached)."""
    lost = next(name for name, node in placed.items() if node == "node3")
    listed = [m.model_copy(update={"state": "failed", "reason": "its node node3 cannot be reached",
                                   "instance": InstanceInfo(id="s", name="x", node="node3", state=InstanceState.LOST)})
              if m.name == lost else m.model_copy(update={"state": "ready"}) for m in models]
    before = {m.name: m.phase for m in s.models.values()}
    assert [m.name for m in lost_with_node(before, listed)] == [lost]
    sync = sync_event(listed_models(*listed), None, s, Defaults(), {}, {}, 3.0, True,
                      listed_budgets(local=150 * MiB, node2=150 * MiB))
    s, _ = step(s, sync)
    assert s.models[lost].phase is Phase.FAILED
    return s, lost


def test_a_model_whose_node_is_lost_and_fits_nowhere_is_refused_naming_each_node():
    s, lost = lose_node3(*three_models_on_three_nodes(pinned=True))
    s, actions = step(s, Arrive(9, lost, 4.0))
    (refused,) = actions
    assert isinstance(refused, Reject) and refused.status == 503 and refused.retry_after_s
    assert "local: 50 MiB short" in refused.message and "node2: 50 MiB short" in refused.message
    assert "its node node3 cannot be reached" in refused.message


def test_a_model_whose_node_is_lost_is_placed_again_where_room_can_be_made():
    s, lost = lose_node3(*three_models_on_three_nodes())
    s, actions = step(s, Arrive(9, lost, 4.0))
    (stop,) = actions  # the least recently used idle model makes room, as for any request
    assert isinstance(stop, Stop) and stop.model == "a"
    s, actions = step(s, Stopped("a", 5.0))
    s, more = step(s, Released("a", 5.1))
    (start,) = [a for a in actions + more if isinstance(a, Start)]
    assert start.placement.wire() == WirePlacement(node=LOCAL_NODE, gpus=())
    s, actions = step(s, Started(lost, 7.0))
    assert Admit(9, lost) in actions


def test_gpu_shows_the_other_nodes_gpus_after_this_boxs():
    from contract.gpu import Gpu, GpuMemory, GpuStatus
    from gateway.gpu import devices_by_pool, with_other_nodes

    here = GpuStatus(available=True, gpus=[Gpu(index=0, memory=GpuMemory(total_bytes=24 * 2**30))])
    listed = [Pool(id=PoolId(gpu=0), total_bytes=24 * 2**30),  # the local one: NVML's reading wins
              Pool(id=PoolId(node="box2", gpu=0), name="RTX 3060", uuid="GPU-b2", total_bytes=12 * 2**30,
                   free_bytes=10 * 2**30),
              budget("box3", 150 * MiB)]  # a memory budget is no GPU
    merged = with_other_nodes(here, listed)
    assert [(g.node, g.index, g.name) for g in merged.gpus] == [("local", 0, None), ("box2", 0, "RTX 3060")]
    assert merged.gpus[1].memory == GpuMemory(total_bytes=12 * 2**30, free_bytes=10 * 2**30, used_bytes=2 * 2**30)
    assert list(devices_by_pool(merged)) == ["gpu0", "box2/gpu0"]
    # No GPU here, one on another node: /gpu says there is one, there.
    none_here = with_other_nodes(GpuStatus(available=False, reason="no NVIDIA driver"), listed)
    assert none_here.available and [g.node for g in none_here.gpus] == ["box2"]
    assert with_other_nodes(here, []) is here
