"""What the scheduler is fed: memory pools from NVML or a budget, and each model's policy."""

from __future__ import annotations

from gateway.gpu import Gpu, GpuMemory, GpuStatus
from gateway.lifecycle import BUDGET_POOL, Defaults, need_by_pool, policy_from_listing, pools_from_gpu

GiB = 2**30


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
    assert need_by_pool(8 * GiB, ["gpu0", "gpu1"], {"gpus": "all"}) == {"gpu0": 4 * GiB, "gpu1": 4 * GiB}
    assert need_by_pool(8 * GiB, ["gpu0", "gpu1"], {"gpus": [1]}) == {"gpu1": 8 * GiB}
    assert need_by_pool(8 * GiB, [BUDGET_POOL], {}) == {BUDGET_POOL: 8 * GiB}
    assert need_by_pool(None, ["gpu0"], {}) == {}  # unknown size: never blocks


def test_policy_from_the_orchestrators_listing():
    listing = {"name": "q", "need_bytes": 5 * GiB,
               "spec": {"parallel": 4, "ttl": 30, "pinned": True, "swap_group": "g", "max_queue": 3}}
    policy = policy_from_listing(listing, Defaults(ttl_s=600, queue=32), ["gpu0"], learned=None)
    assert (policy.limit, policy.queue, policy.ttl_s, policy.pinned, policy.swap_group) == (4, 3, 30.0, True, "g")
    assert policy.need == {"gpu0": 5 * GiB}
    learned = policy_from_listing(listing, Defaults(), ["gpu0"], learned=6 * GiB)
    assert learned.need == {"gpu0": 6 * GiB}  # what NVML saw it use wins over the estimate
    plain = policy_from_listing({"name": "p", "spec": {}}, Defaults(ttl_s=600, queue=32), [], None)
    assert (plain.limit, plain.queue, plain.ttl_s, plain.need) == (1, 32, 600.0, {})
    assert policy_from_listing({"name": "m", "spec": {"max_concurrent": 2, "parallel": 8}}, Defaults(), [],
                               None).limit == 2
