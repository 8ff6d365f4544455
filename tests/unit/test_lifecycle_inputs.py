"""What the scheduler is fed: memory pools from NVML or a budget, and each model's policy."""

from __future__ import annotations

from contract.gpu import Gpu, GpuMemory, GpuStatus
from contract.pools import Pool, PoolId
from gateway.scheduling.placement import Demand
from gateway.scheduling.scheduler import Model, Phase, Policy, State
from gateway.scheduling.inputs import (BUDGET_POOL, Defaults, Pools, gpu_pools_allowed, need_by_pool, ours_by_pool,
                                      policy_from_listing, pools_from, pools_from_gpu, running_on, sync_event)
from support.listing import listing as listed_models
from support.listing import status

GiB, MiB = 2**30, 2**20


def two_gpus() -> GpuStatus:
    return GpuStatus(available=True, gpus=[
        Gpu(index=0, memory=GpuMemory(total_bytes=24 * GiB, used_bytes=10 * GiB)),
        Gpu(index=1, memory=GpuMemory(total_bytes=8 * GiB, used_bytes=1 * GiB)),
    ])


def test_gpu_pools_leave_a_reserve_and_separate_other_users():
    capacity, external = pools_from_gpu(two_gpus(), Defaults(vram_reserve=GiB // 2), ours={"gpu0": 6 * GiB})
    assert capacity == {"gpu0": 23.5 * GiB, "gpu1": 7.5 * GiB}
    assert external == {"gpu0": 4 * GiB, "gpu1": 1 * GiB}  # used minus what our models use


def test_budget_without_a_gpu_and_no_limit_without_either():
    assert pools_from_gpu(GpuStatus(available=False, reason="no GPU"), Defaults(memory_budget=8 * GiB), {}) == (
        {BUDGET_POOL: 8 * GiB}, {})
    assert pools_from_gpu(None, Defaults(), {}) == ({}, {})


def test_need_is_split_over_the_gpus_a_model_uses():
    assert need_by_pool(8 * GiB, ["gpu0", "gpu1"], "all") == {"gpu0": 4 * GiB, "gpu1": 4 * GiB}
    assert need_by_pool(8 * GiB, ["gpu0", "gpu1"], (1,)) == {"gpu1": 8 * GiB}
    assert need_by_pool(8 * GiB, [BUDGET_POOL]) == {BUDGET_POOL: 8 * GiB}
    assert need_by_pool(None, ["gpu0"]) == {}  # unknown size: never blocks


def test_policy_from_the_orchestrators_listing():
    listing = status("q", need_bytes=5 * GiB, parallel=4, ttl=30, pinned=True, swap_group="g", max_queue=3)
    policy = policy_from_listing(listing, Defaults(ttl_s=600, queue=32), [BUDGET_POOL], measured=None)
    assert (policy.limit, policy.queue, policy.ttl_s, policy.pinned, policy.swap_group) == (4, 3, 30.0, True, "g")
    assert policy.need == {BUDGET_POOL: 5 * GiB} and policy.demand is None  # a budget: no placement
    measured = policy_from_listing(listing, Defaults(), ["gpu0"], measured={"gpu0": 6 * GiB})
    assert measured.need == {"gpu0": 6 * GiB}  # what NVML sees it use wins over the estimate
    plain = policy_from_listing(status("p"), Defaults(ttl_s=600, queue=32), [], None)
    assert (plain.limit, plain.queue, plain.ttl_s, plain.need, plain.demand) == (1, 32, 600.0, {}, None)
    assert policy_from_listing(status("m", max_concurrent=2, parallel=8), Defaults(), [],
                               None).limit == 2


def test_residency_from_the_spec_or_the_default_and_the_wait_bound_from_the_default():
    defaults = Defaults(min_residency_s=10, max_wait_s=30)
    own = policy_from_listing(status("q", min_residency=0), defaults, [], None)
    assert (own.min_residency_s, own.max_wait_s) == (0.0, 30)  # 0 is a value, not "unset"
    default = policy_from_listing(status("q"), defaults, [], None)
    assert (default.min_residency_s, default.max_wait_s) == (10, 30)


ESTIMATE = {"weights_bytes": 4 * GiB, "kv_cache_bytes": GiB, "compute_bytes": 256 * MiB, "mmproj_bytes": 0,
            "overhead_bytes": 600 * MiB, "margin_bytes": 64 * MiB, "total_bytes": 5 * GiB + 920 * MiB,
            "host_bytes": 300 * MiB}


def test_on_gpus_a_model_gets_a_demand_from_the_estimate_and_the_learned_overhead():
    listing = status("q", need_bytes=ESTIMATE["total_bytes"], estimate=ESTIMATE, gpus=[1])
    policy = policy_from_listing(listing, Defaults(), ["gpu0", "gpu1"], None, overhead={"gpu1": 400 * MiB})
    assert policy.demand == Demand(5 * GiB, {"gpu1": 256 * MiB + 64 * MiB + 400 * MiB}, ("gpu1",))
    unlearned = policy_from_listing(listing, Defaults(), ["gpu0", "gpu1"], None)
    assert unlearned.demand.per_gpu == {"gpu1": 920 * MiB}  # the estimate's default until learned


def test_without_an_estimate_need_bytes_is_the_need_on_one_gpu():
    policy = policy_from_listing(status("q", need_bytes=6 * GiB), Defaults(), ["gpu0", "gpu1"], None)
    assert policy.demand == Demand(6 * GiB, {"gpu0": 0, "gpu1": 0}, ("gpu0", "gpu1"))
    assert policy_from_listing(status("q"), Defaults(), ["gpu0"], None).demand is None


# ---- pools the orchestrator reports (other nodes) beside NVML's ----------------------------------

def remote(node: str, gpu: int | None, total: int | None, free: int | None = None, uuid: str | None = None) -> Pool:
    return Pool(id=PoolId(node=node, gpu=gpu), total_bytes=total, free_bytes=free, uuid=uuid)


def test_no_pools_listed_is_the_nvml_reading_alone():
    reserve = Defaults(vram_reserve=GiB // 2)
    assert pools_from(two_gpus(), [], reserve, {"gpu0": 6 * GiB}) == Pools(*pools_from_gpu(two_gpus(), reserve,
                                                                                          {"gpu0": 6 * GiB}))
    assert pools_from(None, [], Defaults(memory_budget=8 * GiB), {}) == Pools({BUDGET_POOL: 8 * GiB})
    assert pools_from(None, [], Defaults(), {}) == Pools()


def test_listed_pools_add_other_nodes_from_their_total_and_free_bytes():
    listed = [remote("n2", 0, 16 * GiB, free=10 * GiB), remote("n2", 1, 8 * GiB),  # free unknown: others use none
              remote("n3", None, 32 * GiB, free=30 * GiB),  # a node's memory budget: no GPU reserve
              remote("n4", 0, None)]  # no total: not a pool to schedule on
    pools = pools_from(two_gpus(), listed, Defaults(vram_reserve=GiB // 2), ours={"gpu0": 6 * GiB, "n2/gpu0": 4 * GiB})
    assert pools.capacity == {"gpu0": 23.5 * GiB, "gpu1": 7.5 * GiB, "n2/gpu0": 15.5 * GiB, "n2/gpu1": 7.5 * GiB,
                              "n3/budget": 32 * GiB}
    assert pools.external == {"gpu0": 4 * GiB, "gpu1": 1 * GiB, "n2/gpu0": 2 * GiB, "n2/gpu1": 0,
                              "n3/budget": 2 * GiB}  # used (total - free) minus what our models use
    assert pools.gpus == {"gpu0", "gpu1", "n2/gpu0", "n2/gpu1"}  # release waited for, one start at a time


def test_nvml_wins_for_the_local_pools_and_listed_pools_stand_in_without_it():
    listed = [remote("local", 0, 80 * GiB, free=80 * GiB), remote("n2", 0, 16 * GiB, free=16 * GiB)]
    with_nvml = pools_from(two_gpus(), listed, Defaults(vram_reserve=0), {})
    assert with_nvml.capacity["gpu0"] == 24 * GiB and with_nvml.external["gpu0"] == 10 * GiB  # NVML's live reading
    without = pools_from(None, listed, Defaults(vram_reserve=0, memory_budget=8 * GiB), {})
    assert without.capacity == {"gpu0": 80 * GiB, "n2/gpu0": 16 * GiB}  # no budget once there are pools


def test_ours_on_another_nodes_pool_is_what_the_scheduler_counts_there():
    running = Model("m", Policy(need={"n2/gpu0": 3 * GiB}), Phase.READY)
    state = State(models={"m": running})
    assert ours_by_pool(None, state, [remote("n2", 0, 16 * GiB)]) == {"n2/gpu0": 3 * GiB}
    assert ours_by_pool(None, state) == {}


def test_a_specs_gpus_are_indices_on_whichever_node_never_a_memory_budget():
    pools = ["gpu0", "gpu1", "n2/gpu0", "n2/gpu1", "n3/budget"]
    assert gpu_pools_allowed(pools, (1,)) == ["gpu1", "n2/gpu1"]
    assert gpu_pools_allowed(pools, "all") == pools[:4]
    assert gpu_pools_allowed(["n2/gpu0"], (3,)) == ["gpu3"]  # none of them here: placement says so
    assert need_by_pool(8 * GiB, pools, (0,)) == {"gpu0": 4 * GiB, "n2/gpu0": 4 * GiB}
    assert need_by_pool(8 * GiB, ["n2/budget", "n3/budget"]) == {"n2/budget": 8 * GiB}  # on one node


def test_a_model_the_orchestrator_reports_running_holds_its_need_where_it_runs():
    listed = [Pool(id=PoolId(gpu=0), total_bytes=24 * GiB, models=["here"]),
              Pool(id=PoolId(node="n2", gpu=0), total_bytes=24 * GiB, models=["there", "split"]),
              Pool(id=PoolId(node="n2", gpu=1), total_bytes=24 * GiB, models=["split"])]
    assert running_on(listed) == {"here": ["gpu0"], "there": ["n2/gpu0"], "split": ["n2/gpu0", "n2/gpu1"]}
    models = [status(name, "ready", need_bytes=6 * GiB) for name in ("here", "there", "split", "unknown")]
    sync = sync_event(listed_models(*models), None, State(), Defaults(vram_reserve=0), {}, {}, 0.0, True, listed)
    needs = {name: policy.need for name, (policy, _, _) in sync.models.items()}
    assert needs == {"here": {"gpu0": 6 * GiB}, "there": {"n2/gpu0": 6 * GiB},
                     "split": {"n2/gpu0": 3 * GiB, "n2/gpu1": 3 * GiB},
                     "unknown": {"gpu0": 2 * GiB, "n2/gpu0": 2 * GiB, "n2/gpu1": 2 * GiB}}  # not reported: spread


def test_the_sync_event_carries_the_listed_pools_and_places_on_them():
    model = status("q", need_bytes=ESTIMATE["total_bytes"], estimate=ESTIMATE)
    listed = [remote("n2", 0, 16 * GiB, free=16 * GiB, uuid="GPU-n2")]
    sync = sync_event(listed_models(model), None, State(), Defaults(vram_reserve=0), {}, {"n2/gpu0": 400 * MiB},
                      0.0, True, listed)
    assert (sync.capacity, sync.external, sync.gpu_pools) == ({"n2/gpu0": 16 * GiB}, {"n2/gpu0": 0},
                                                              frozenset({"n2/gpu0"}))
    policy = sync.models["q"][0]
    assert policy.demand == Demand(5 * GiB, {"n2/gpu0": 256 * MiB + 64 * MiB + 400 * MiB}, ("n2/gpu0",))
    today = sync_event(listed_models(model), None, State(), Defaults(), {}, {}, 0.0, True)
    assert (today.capacity, today.gpu_pools, today.models["q"][0].demand) == ({}, frozenset(), None)
