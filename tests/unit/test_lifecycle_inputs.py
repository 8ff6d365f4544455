"""What the scheduler is fed: memory pools from NVML or a budget, and each model's policy."""

from __future__ import annotations

from contract.gpu import Gpu, GpuMemory, GpuStatus
from gateway.placement import Demand
from gateway.scheduler_inputs import BUDGET_POOL, Defaults, need_by_pool, policy_from_listing, pools_from_gpu
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
