"""The pure scheduler: every decision as a table of events in, actions out.

No Docker, no HTTP, no clock: a state, a few events, the exact actions. The last
test runs a few hundred random event sequences (fed back the way the effect layer
would: Started/Stopped some time after each Start/Stop) and checks invariants
after every step.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field, replace

import pytest

from contract.placement import Placement as WirePlacement
from contract.pools import PoolId
from gateway.scheduling.placement import Demand, Placement, place, start_body
from gateway.scheduling.scheduler import (GiB, HOLDS_MEMORY, Admit, Arrive, Cancel, Finish, Model, Phase, Policy, Reject,
                               Released, Start, StartFailed, State, Stop, StopKind, Stopped, Started, Sync, Tick,
                               Waiter, step)
from gateway.scheduling.scheduler import TICK_S, KeepAlive, Unload, next_tick

READY, STARTING, STOPPING, STOPPED, FAILED, RELEASING = (Phase.READY, Phase.STARTING, Phase.STOPPING, Phase.STOPPED,
                                                         Phase.FAILED, Phase.RELEASING)


# ---- helpers -----------------------------------------------------------------------------------

def gb(n: float) -> int:
    return int(n * GiB)


def model(name, phase=STOPPED, need=None, *, limit=1, queue=32, ttl=0.0, pinned=False, group=None,
          in_flight=0, waiting=(), last_used=0.0, reason=None, demand=None, placement=None) -> Model:
    """``need``: bytes in gpu0, or a {pool: bytes} dict, or None (size unknown).
    ``waiting``: rids queued (since 0), or (rid, since) pairs. ``demand``: placed when it starts."""
    if need is None:
        need = {}
    elif isinstance(need, int):
        need = {"gpu0": need}
    queued = tuple(Waiter(*w) if isinstance(w, tuple) else Waiter(w, 0.0) for w in waiting)
    return Model(name, Policy(limit=limit, queue=queue, ttl_s=ttl, pinned=pinned, swap_group=group, need=need,
                              demand=demand),
                 phase, in_flight, queued, last_used, reason, placement)


def state(*models: Model, capacity=None, external=None, timeout=120.0, gpus=()) -> State:
    """``gpus``: the pools NVML measures (release waited for, one start at a time); () a CPU budget."""
    return State(models={m.name: m for m in models},
                 capacity={"gpu0": gb(8)} if capacity is None else capacity,
                 external=external or {}, queue_timeout_s=timeout, gpu_pools=frozenset(gpus))


def run(s: State, *events) -> tuple[State, list]:
    """Every event through ``step``, in order: the final state and all actions."""
    actions = []
    for event in events:
        s, more = step(s, event)
        actions.extend(more)
    return s, actions


def trace(s: State, *events) -> tuple[State, list[list]]:
    """Like ``run``, but the actions of each event apart."""
    out = []
    for event in events:
        s, more = step(s, event)
        out.append(more)
    return s, out


def rids(m: Model) -> list[int]:
    return [w.rid for w in m.queue]


class R:
    """Matches a Reject on its fields, and its message on fragments (messages are prose)."""

    def __init__(self, rid, model, status, retry_after_s, *fragments):
        self.rid, self.model, self.status, self.retry, self.fragments = rid, model, status, retry_after_s, fragments

    def __eq__(self, other):
        return (isinstance(other, Reject) and (other.rid, other.model, other.status, other.retry_after_s)
                == (self.rid, self.model, self.status, self.retry)
                and all(f in other.message for f in self.fragments))

    def __repr__(self):
        return f"R({self.rid}, {self.model!r}, {self.status}, {self.retry}, *{self.fragments!r})"


# ---- a request arrives -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "m, expected, queued, in_flight",
    [
        (model("a", READY), [Admit(1, "a")], [], 1),
        (model("a", READY, limit=2, in_flight=1), [Admit(1, "a")], [], 2),
        (model("a", READY, in_flight=1), [], [1], 1),  # full: waits
        (model("a", READY, in_flight=1, queue=1, waiting=[7]),
         [Reject(1, "a", 429, "Model 'a' is at its limit: 1 request(s) running, 1 waiting (the most it queues). "
                              "Estimated wait: not known yet.", 1, 1, None)], [7], 1),
        (model("a", STARTING, waiting=[7]), [], [7, 1], 0),  # joins the start under way: no second Start
        (model("a", STOPPING), [], [1], 0),  # waits for the stop, then starts again
        (model("a", STOPPED), [Start("a")], [1], 0),
        (model("a", FAILED, reason="oom"), [Start("a")], [1], 0),  # a failed model is tried again
        (model("a", STOPPED, need=gb(8)), [Start("a")], [1], 0),  # exactly fits
    ],
    ids=["ready-free", "ready-second-slot", "ready-full-queues", "queue-full-429", "starting-joins",
         "stopping-waits", "stopped-starts", "failed-restarts", "exact-fit"],
)
def test_arrive(m, expected, queued, in_flight):
    s, actions = step(state(m), Arrive(1, "a", now=10.0))
    assert actions == expected
    after = s.models["a"]
    assert rids(after) == queued
    assert after.in_flight == in_flight
    assert after.last_used == 10.0


def test_unknown_model_is_404():
    s0 = state(model("a", READY))
    s, actions = step(s0, Arrive(1, "nope", 1.0))
    assert actions == [Reject(1, "nope", 404, "No model named 'nope'.", 0)]
    assert s == s0


@pytest.mark.parametrize("event", [Finish(1, "nope", 1.0), Cancel(1, "nope", 1.0), Started("nope", 1.0),
                                   StartFailed("nope", "x", 1.0), Stopped("nope", 1.0), Released("nope", 1.0), Tick(1.0)],
                         ids=lambda e: type(e).__name__)
def test_events_about_unknown_models_change_nothing(event):
    s0 = state(model("a", READY, in_flight=1, waiting=[2]))
    assert step(s0, event) == (s0, [])


# ---- on-demand start, concurrency, bounded queue -----------------------------------------------

def test_on_demand_start_many_requests_one_start():
    s, steps = trace(state(model("a", need=gb(4), limit=2)),
                     Arrive(1, "a", 0.0), Arrive(2, "a", 0.1), Arrive(3, "a", 0.2), Started("a", 1.0))
    assert steps == [[Start("a")], [], [], [Admit(1, "a"), Admit(2, "a")]]  # one start, then FIFO up to the limit
    a = s.models["a"]
    assert (a.phase, a.in_flight, rids(a), a.last_used) == (READY, 2, [3], 1.0)
    s, actions = run(s, Finish(1, "a", 2.0))
    assert actions == [Admit(3, "a")]
    assert (s.models["a"].in_flight, s.models["a"].queue, s.models["a"].last_used) == (2, (), 2.0)


def test_concurrency_limit_then_bounded_queue_then_429():
    s, steps = trace(state(model("a", READY, limit=2, queue=1)),
                     *(Arrive(i, "a", 1.0) for i in range(1, 6)))
    assert steps[:3] == [[Admit(1, "a")], [Admit(2, "a")], []]
    for rid, actions in zip((4, 5), steps[3:]):
        assert actions == [R(rid, "a", 429, 1, "at its limit", "2 request(s) running", "1 waiting")]
    assert rids(s.models["a"]) == [3]
    # a slot frees: the queued one goes, and the queue has room again
    s, steps = trace(s, Finish(1, "a", 2.0), Arrive(6, "a", 2.0), Arrive(7, "a", 2.0))
    assert steps == [[Admit(3, "a")], [], [R(7, "a", 429, 1)]]


@pytest.mark.parametrize("limit, queue, arrivals, admitted, queued, rejected", [
    (1, 0, 3, [1], [], [2, 3]),
    (2, 0, 3, [1, 2], [], [3]),
    (1, 1, 3, [1], [2], [3]),
    (2, 1, 4, [1, 2], [3], [4]),
], ids=["limit1-queue0", "limit2-queue0", "limit1-queue1", "limit2-queue1"])
@pytest.mark.parametrize("phase", [STOPPED, READY], ids=lambda p: p.value)
def test_limit_plus_queue_requests_are_taken_whatever_the_phase(phase, limit, queue, arrivals, admitted, queued,
                                                                 rejected):
    """Requests waiting for a start are the ones that will take its slots, not a queue beyond them:
    a stopped model takes as many as a ready one (and max_queue: 0 does not make on-demand start impossible)."""
    s, actions = run(state(model("a", phase, limit=limit, queue=queue)),
                     *(Arrive(i, "a", 1.0) for i in range(1, arrivals + 1)))
    assert [a.rid for a in actions if isinstance(a, Reject)] == rejected
    assert all(a.status == 429 for a in actions if isinstance(a, Reject))
    if phase is STOPPED:
        assert [a for a in actions if isinstance(a, Start)] == [Start("a")]
        s, more = step(s, Started("a", 2.0))
        actions += more
    assert [a.rid for a in actions if isinstance(a, Admit)] == admitted
    assert rids(s.models["a"]) == queued


def test_finish_never_goes_below_zero():
    s, actions = step(state(model("a", READY)), Finish(9, "a", 1.0))
    assert (actions, s.models["a"].in_flight) == ([], 0)


# ---- idle unload (ttl) -------------------------------------------------------------------------

@pytest.mark.parametrize("m, now, stops", [
    (model("a", READY, ttl=60, last_used=100), 159.9, False),
    (model("a", READY, ttl=60, last_used=100), 160.0, True),
    (model("a", READY, ttl=0, last_used=0), 1e9, False),  # 0: never
    (model("a", READY, ttl=60, pinned=True), 1e9, False),  # pinned: never
    (model("a", READY, ttl=60, in_flight=1), 1e9, False),  # answering someone
    (model("a", READY, ttl=60, in_flight=1, waiting=[(2, 1e9)]), 1e9, False),  # someone waiting
    (model("a", STARTING, ttl=60), 1e9, False),
    (model("a", STOPPED, ttl=60), 1e9, False),
    (model("a", FAILED, ttl=60), 1e9, False),
], ids=["before-ttl", "at-ttl", "ttl0", "pinned", "in-flight", "queued", "starting", "stopped", "failed"])
def test_idle_unload(m, now, stops):
    s, actions = step(state(m), Tick(now))
    assert actions == ([Stop("a", "idle for 60 s", StopKind.IDLE)] if stops else [])
    assert s.models["a"].phase is (STOPPING if stops else m.phase)


def test_use_resets_the_idle_clock():
    s = state(model("a", READY, ttl=60, limit=2, last_used=0))
    s, actions = run(s, Arrive(1, "a", 50.0), Tick(100.0), Finish(1, "a", 90.0), Tick(149.0))
    assert actions == [Admit(1, "a")]
    s, actions = run(s, Tick(150.0))
    assert actions == [Stop("a", "idle for 60 s", StopKind.IDLE)]


def test_ttl_counts_from_ready_not_from_the_last_request():
    s, actions = run(state(model("a", ttl=10)), Arrive(1, "a", 0.0), Cancel(1, "a", 1.0), Started("a", 30.0),
                     Tick(35.0))
    assert actions == [Start("a")]  # the start carries on for nobody; it is not stopped on arrival
    s, actions = run(s, Tick(40.0))
    assert actions == [Stop("a", "idle for 10 s", StopKind.IDLE)]


# ---- races (the table) -----------------------------------------------------------------

RACES = [
    pytest.param(
        state(model("a", need=gb(4))),
        [Arrive(1, "a", 0), Arrive(2, "a", 1), Started("a", 2), Finish(1, "a", 3)],
        [Start("a"), Admit(1, "a"), Admit(2, "a")],
        id="request-during-start"),
    pytest.param(
        state(model("a", READY, need=gb(4), ttl=10)),
        [Tick(10), Arrive(1, "a", 11), Stopped("a", 12), Started("a", 15)],
        [Stop("a", "idle for 10 s", StopKind.IDLE), Start("a"), Admit(1, "a")],
        id="request-during-unload"),
    pytest.param(
        state(model("a", READY, need=gb(4), ttl=10)),
        [Tick(10), Arrive(1, "a", 11), Cancel(1, "a", 11.5), Stopped("a", 12)],
        [Stop("a", "idle for 10 s", StopKind.IDLE)],
        id="request-during-unload-gone-before-it-stopped"),
    pytest.param(
        state(model("a", READY, need=gb(6), in_flight=1, last_used=1),
              model("b", READY, need=gb(2), last_used=5), model("c", need=gb(4))),
        [Arrive(1, "c", 10), Finish(0, "a", 11), Stopped("a", 12), Stopped("b", 12), Started("c", 13)],
        [Stop("b", "making room for 'c'", StopKind.ROOM), Stop("a", "making room for 'c'", StopKind.ROOM), Start("c"),
         Admit(1, "c")],
        id="eviction-waits-for-requests-in-flight"),  # b alone is not enough: nothing stops until a is idle,
    # then least recently used first (a was just used, so b goes too)
    pytest.param(
        state(model("a", READY, need=gb(4), in_flight=1, last_used=1),
              model("b", READY, need=gb(4), last_used=5), model("c", need=gb(4))),
        [Arrive(1, "c", 10), Stopped("b", 11), Started("c", 12)],
        [Stop("b", "making room for 'c'", StopKind.ROOM), Start("c"), Admit(1, "c")],
        id="eviction-with-requests-in-flight"),
    pytest.param(
        state(model("x", READY, need=gb(6), in_flight=1), model("a", need=gb(2)), model("b", need=gb(2))),
        [Arrive(1, "a", 1), Arrive(2, "b", 2), Started("a", 3)],
        [Start("a"), Admit(1, "a")],  # b waits: the last 2 GB went to a
        id="two-models-compete-for-the-last-gb"),
    pytest.param(
        state(model("x", READY, need=gb(6), in_flight=1), model("a", need=gb(2)), model("b", need=gb(2))),
        [Arrive(1, "a", 1), Arrive(2, "b", 2), Started("a", 3), Finish(1, "a", 4), Stopped("a", 5),
         Started("b", 6)],
        [Start("a"), Admit(1, "a"), Stop("a", "making room for 'b'", StopKind.ROOM), Start("b"), Admit(2, "b")],
        id="the-loser-gets-the-gb-once-the-winner-is-idle"),
]


@pytest.mark.parametrize("s, events, expected", RACES)
def test_races(s, events, expected):
    s, actions = run(s, *events)
    assert actions == expected
    assert _memory_ok(s)


def test_eviction_is_not_done_when_it_cannot_make_enough_room():
    # a (6 GB) answers someone, b (2 GB) is idle; c needs 4: even without b only 2 GB are free.
    s, actions = run(state(model("a", READY, need=gb(6), in_flight=1, last_used=1),
                           model("b", READY, need=gb(1), last_used=5), model("c", need=gb(4))),
                     Arrive(1, "c", 10))
    assert actions == []  # b stays: stopping it would not let c in
    assert s.models["b"].phase is READY and rids(s.models["c"]) == [1]


# ---- memory: fit, eviction order, never fits ---------------------------------------------------

def test_lru_eviction_order_and_only_as_many_as_needed():
    s = state(model("a", READY, need=gb(2), last_used=3), model("b", READY, need=gb(2), last_used=1),
              model("c", READY, need=gb(2), last_used=2), model("d", need=gb(5)))
    s, actions = run(s, Arrive(1, "d", 10))  # 2 GB free, 3 missing: the two least recently used go
    assert actions == [Stop("b", "making room for 'd'", StopKind.ROOM), Stop("c", "making room for 'd'", StopKind.ROOM)]
    s, actions = run(s, Stopped("b", 11))
    assert actions == []  # not yet: c still holds its part
    s, actions = run(s, Stopped("c", 12), Started("d", 13))
    assert actions == [Start("d"), Admit(1, "d")]
    assert s.models["a"].phase is READY


@pytest.mark.parametrize("others, victims", [
    ([model("a", READY, need=gb(3), last_used=1, in_flight=1), model("b", READY, need=gb(3), last_used=2)],
     ["b"]),
    ([model("a", READY, need=gb(3), last_used=1, in_flight=1, waiting=[9]),
      model("b", READY, need=gb(3), last_used=2)], ["b"]),
    ([model("a", READY, need=gb(3), last_used=1, pinned=True), model("b", READY, need=gb(3), last_used=2)],
     ["b"]),
    ([model("a", STARTING, need=gb(3), last_used=1), model("b", READY, need=gb(3), last_used=2)], ["b"]),
    ([model("a", READY, last_used=1), model("b", READY, need=gb(6), last_used=2)], ["b"]),  # unknown size frees nothing
    ([model("a", READY, need={"gpu1": gb(6)}, last_used=1), model("b", READY, need=gb(6), last_used=2)],
     ["b"]),  # another pool frees nothing here
], ids=["in-flight", "in-flight-and-queued", "pinned", "starting", "unknown-size", "other-pool"])
def test_never_evict_busy_pinned_or_useless(others, victims):
    s = state(*others, model("new", need=gb(3)), capacity={"gpu0": gb(8), "gpu1": gb(8)})
    s, actions = run(s, Arrive(1, "new", 10))
    assert actions == [Stop(v, "making room for 'new'", StopKind.ROOM) for v in victims]


def test_memory_being_freed_counts_no_extra_eviction():
    s = state(model("a", STOPPING, need=gb(4)), model("b", READY, need=gb(4), last_used=1), model("c", need=gb(4)))
    s, actions = run(s, Arrive(1, "c", 5))
    assert actions == []  # a's 4 GB will do: b stays
    s, actions = run(s, Stopped("a", 6))
    assert actions == [Start("c")]
    assert s.models["b"].phase is READY


@pytest.mark.parametrize("s, fragments", [
    (state(model("big", need=gb(10))), ["needs 10.0 GiB in gpu0", "holds 8.0 GiB", "Loaded: nothing"]),
    (state(model("p", READY, need=gb(5), pinned=True), model("big", need=gb(4))),
     ["needs 4.0 GiB in gpu0", "with 5.0 GiB used by pinned models and other processes",
      "Loaded: p 5.0 GiB (pinned)"]),
    (state(model("big", need=gb(4)), external={"gpu0": gb(5)}),
     ["with 5.0 GiB used by pinned models", "Loaded: nothing"]),
    (state(model("o", READY, need=gb(2), in_flight=1), model("big", need={"gpu0": gb(1), "gpu1": gb(3)}),
           capacity={"gpu0": gb(8), "gpu1": gb(2)}),
     ["needs 3.0 GiB in gpu1", "holds 2.0 GiB"]),
], ids=["bigger-than-the-pool", "pinned-in-the-way", "other-processes", "one-of-two-pools"])
def test_503_at_once_when_it_can_never_fit(s, fragments):
    s, actions = run(s, Arrive(1, "big", 1), Arrive(2, "big", 2))
    assert actions == [R(1, "big", 503, 30, "Model 'big' cannot be started", *fragments),
                       R(2, "big", 503, 30, "Model 'big' cannot be started", *fragments)]
    assert s.models["big"].queue == () and s.models["big"].phase is STOPPED


def test_busy_models_hold_the_room_wait_then_start():
    s = state(model("a", READY, need=gb(6), in_flight=1), model("b", need=gb(4)))
    s, actions = run(s, Arrive(1, "b", 1))
    assert actions == []
    s, steps = trace(s, Finish(99, "a", 2), Stopped("a", 3), Started("b", 4))
    assert steps == [[Stop("a", "making room for 'b'", StopKind.ROOM)], [Start("b")], [Admit(1, "b")]]


def test_busy_models_hold_the_room_until_the_queue_timeout():
    s = state(model("a", READY, need=gb(6), in_flight=1), model("b", need=gb(4)), timeout=30)
    s, steps = trace(s, Arrive(1, "b", 1), Arrive(2, "b", 20), Tick(30.9), Tick(31))
    assert steps[:3] == [[], [], []]
    assert steps[3] == [R(1, "b", 503, 5, "Waited 30 s for model 'b'", "2.0 GiB more needed in gpu0",
                          "busy models hold it", "Loaded: a 6.0 GiB (busy)")]
    assert rids(s.models["b"]) == [2]
    s, actions = run(s, Tick(50))
    assert actions == [R(2, "b", 503, 5, "Waited 30 s")]
    s, actions = run(s, Finish(99, "a", 51))
    assert actions == []  # nobody waits for b any more: a stays
    assert s.models["a"].phase is READY


@pytest.mark.parametrize("need, capacity", [
    (None, {"gpu0": gb(8)}),  # unknown size: always fits
    ({"gpu1": gb(100)}, {"gpu0": gb(8)}),  # a pool without a capacity is unlimited
    ({}, {}),
], ids=["unknown-size", "unlimited-pool", "no-pools"])
def test_what_always_fits(need, capacity):
    s = state(model("full", READY, need=gb(8), in_flight=1), model("a", need=need), capacity=capacity)
    _, actions = run(s, Arrive(1, "a", 1))
    assert actions == [Start("a")]


def test_multi_pool_need_must_fit_in_each_pool():
    caps = {"gpu0": gb(8), "gpu1": gb(8)}
    s = state(model("on0", READY, need={"gpu0": gb(6)}, last_used=2),
              model("on1", READY, need={"gpu1": gb(6)}, last_used=1),
              model("split", need={"gpu0": gb(2), "gpu1": gb(4)}), capacity=caps)
    s, actions = run(s, Arrive(1, "split", 5))
    assert actions == [Stop("on1", "making room for 'split'", StopKind.ROOM)]  # gpu0 has its 2 GB; gpu1 lacks 2
    s, actions = run(s, Stopped("on1", 6))
    assert actions == [Start("split")]
    assert _memory_ok(s)


def test_multi_pool_evicts_in_lru_order_until_every_pool_fits():
    caps = {"gpu0": gb(8), "gpu1": gb(8)}
    s = state(model("both", READY, need={"gpu0": gb(3), "gpu1": gb(3)}, last_used=3),
              model("on0", READY, need={"gpu0": gb(4)}, last_used=1),
              model("on1", READY, need={"gpu1": gb(4)}, last_used=2),
              model("split", need={"gpu0": gb(4), "gpu1": gb(4)}), capacity=caps)
    _, actions = run(s, Arrive(1, "split", 5))
    assert actions == [Stop("on0", "making room for 'split'", StopKind.ROOM),
                       Stop("on1", "making room for 'split'", StopKind.ROOM)]


def test_oldest_demand_starts_first_when_room_frees():
    s = state(model("x", READY, need=gb(6), in_flight=1), model("a", need=gb(4)), model("b", need=gb(4)))
    s, actions = run(s, Arrive(1, "b", 1), Arrive(2, "a", 2), Finish(99, "x", 3))
    assert actions == [Stop("x", "making room for 'b'", StopKind.ROOM)]
    s, actions = run(s, Stopped("x", 4))
    assert actions == [Start("b"), Start("a")]  # both fit in the 8 GB x left
    assert _memory_ok(s)


# ---- swap groups -------------------------------------------------------------------------------

def test_swap_group_stops_the_idle_one_then_starts():
    s = state(model("a", READY, group="g"), model("b", group="g"), model("c", READY))
    s, steps = trace(s, Arrive(1, "b", 1), Stopped("a", 2), Started("b", 3))
    assert steps == [[Stop("a", "swap group 'g': 'b' is wanted", StopKind.SWAP_GROUP)], [Start("b")], [Admit(1, "b")]]
    assert s.models["c"].phase is READY  # not in the group


def test_swap_waits_for_the_running_one_to_be_idle():
    s = state(model("a", READY, group="g", limit=2, in_flight=1), model("b", group="g"))
    s, steps = trace(s, Arrive(1, "b", 1), Arrive(2, "a", 2), Finish(99, "a", 3), Finish(2, "a", 4),
                     Stopped("a", 5))
    assert steps == [[], [Admit(2, "a")], [], [Stop("a", "swap group 'g': 'b' is wanted", StopKind.SWAP_GROUP)],
                     [Start("b")]]


@pytest.mark.parametrize("rival", [model("a", STARTING, group="g"), model("a", STOPPING, group="g")],
                         ids=["rival-starting", "rival-stopping"])
def test_swap_waits_for_a_rival_in_transition(rival):
    s, actions = run(state(rival, model("b", group="g")), Arrive(1, "b", 1))
    assert actions == []
    assert s.models["a"].phase is rival.phase and rids(s.models["b"]) == [1]


def test_swap_after_a_rival_finishes_starting():
    s = state(model("a", STARTING, group="g", waiting=[1]), model("b", group="g"))
    s, steps = trace(s, Arrive(2, "b", 1), Started("a", 2), Finish(1, "a", 3), Stopped("a", 4), Started("b", 5))
    assert steps == [[], [Admit(1, "a")], [Stop("a", "swap group 'g': 'b' is wanted", StopKind.SWAP_GROUP)],
                     [Start("b")], [Admit(2, "b")]]


def test_pinned_member_of_a_swap_group_blocks_the_others():
    s = state(model("a", READY, group="g", pinned=True), model("b", group="g"))
    s, actions = run(s, Arrive(1, "b", 1))
    assert actions == [R(1, "b", 503, 30, "'a' is pinned in swap group 'g'")]
    assert s.models["a"].phase is READY


@pytest.mark.parametrize("busy", [False, True], ids=["rival-idle", "rival-busy"])
def test_swap_group_model_that_can_never_fit_is_503_at_once_and_the_rival_stays(busy):
    s = state(model("a", READY, need=gb(4), group="g", in_flight=int(busy)), model("b", need=gb(10), group="g"))
    s, actions = run(s, Arrive(1, "b", 1))
    assert actions == [R(1, "b", 503, 30, "needs 10.0 GiB in gpu0", "holds 8.0 GiB", "Loaded: a 4.0 GiB")]
    assert s.models["a"].phase is READY


def test_swap_group_member_that_is_stopped_does_not_block():
    s = state(model("a", STOPPED, group="g", pinned=True), model("b", FAILED, group="g"), model("c", group="g"))
    _, actions = run(s, Arrive(1, "c", 1))
    assert actions == [Start("c")]


def test_cancel_before_anything_started_starts_nothing():
    s = state(model("a", READY, group="g"), model("b", group="g"))
    s, steps = trace(s, Arrive(1, "b", 1), Cancel(1, "b", 2), Stopped("a", 3))
    assert steps == [[Stop("a", "swap group 'g': 'b' is wanted", StopKind.SWAP_GROUP)], [], []]
    assert s.models["b"].phase is STOPPED


def test_cancel_while_waiting_for_room_starts_nothing():
    s = state(model("a", READY, need=gb(6)), model("b", need=gb(4)))
    s, steps = trace(s, Arrive(1, "b", 1), Cancel(1, "b", 2), Stopped("a", 3))
    assert steps == [[Stop("a", "making room for 'b'", StopKind.ROOM)], [], []]
    assert s.models["b"].phase is STOPPED


# ---- queue timeout, cancel ---------------------------------------------------------------------

def test_queued_request_times_out_while_the_model_loads_and_the_start_continues():
    s = state(model("a", limit=1), timeout=60)
    s, steps = trace(s, Arrive(1, "a", 0), Arrive(2, "a", 30), Tick(59.9), Tick(60))
    assert steps == [[Start("a")], [], [],
                     [Reject(1, "a", 503, "Waited 60 s for model 'a' (still loading). 1 still waiting. "
                                          "Estimated wait: not known yet.", 5, 1, None)]]
    s, actions = run(s, Started("a", 70))
    assert actions == [Admit(2, "a")]


def test_queued_request_times_out_when_all_slots_stay_busy():
    s = state(model("a", READY, limit=2, in_flight=2), timeout=10)
    _, actions = run(s, Arrive(1, "a", 0), Tick(10))
    assert actions == [Reject(1, "a", 503, "Waited 10 s for model 'a' (all 2 slot(s) busy). 0 still waiting. "
                                           "Estimated wait: not known yet.", 5, 0, None)]


def test_cancel_removes_only_that_request():
    s = state(model("a", READY, in_flight=1, waiting=[1, 2, 3]))
    s, actions = run(s, Cancel(2, "a", 1), Cancel(42, "a", 1))
    assert actions == [] and rids(s.models["a"]) == [1, 3]
    s, actions = run(s, Finish(0, "a", 2))
    assert actions == [Admit(1, "a")]


def test_cancel_of_the_only_waiter_lets_the_start_continue():
    s, steps = trace(state(model("a")), Arrive(1, "a", 0), Cancel(1, "a", 1), Started("a", 2))
    assert steps == [[Start("a")], [], []]
    assert (s.models["a"].phase, s.models["a"].in_flight) == (READY, 0)


# ---- failures ----------------------------------------------------------------------------------

def test_start_failed_rejects_the_queue_with_the_reason():
    s = state(model("a"))
    s, actions = run(s, Arrive(1, "a", 0), Arrive(2, "a", 1), StartFailed("a", "image not found", 2))
    assert actions == [Start("a"),
                       Reject(1, "a", 503, "Model 'a' could not be started: image not found", 30),
                       Reject(2, "a", 503, "Model 'a' could not be started: image not found", 30)]
    a = s.models["a"]
    assert (a.phase, a.reason, a.queue) == (FAILED, "image not found", ())
    s, actions = run(s, Arrive(3, "a", 5))  # the next request tries again
    assert actions == [Start("a")]
    assert (s.models["a"].phase, s.models["a"].reason) == (STARTING, None)


def test_crash_marks_failed_and_the_next_request_restarts():
    s = state(model("a", READY, need=gb(4)))
    s, actions = run(s, Stopped("a", 1, reason="exited with code 139"))
    assert actions == []
    assert (s.models["a"].phase, s.models["a"].reason) == (FAILED, "exited with code 139")
    s, actions = run(s, Arrive(1, "a", 2), Started("a", 3))
    assert actions == [Start("a"), Admit(1, "a")]
    assert (s.models["a"].phase, s.models["a"].reason) == (READY, None)


def test_crash_with_requests_queued_restarts_at_once():
    s = state(model("a", READY, in_flight=1, waiting=[2]))
    s, actions = run(s, Stopped("a", 1, reason="killed"))
    assert actions == [Start("a")]  # someone is waiting for it
    s, actions = run(s, Finish(1, "a", 2), Started("a", 3))
    assert actions == [Admit(2, "a")]


def test_plain_stop_is_stopped_not_failed():
    s, _ = run(state(model("a", STOPPING)), Stopped("a", 1))
    assert (s.models["a"].phase, s.models["a"].reason) == (STOPPED, None)


def test_crash_frees_its_memory_for_others():
    s = state(model("a", READY, need=gb(6), in_flight=1), model("b", need=gb(4)))
    s, actions = run(s, Arrive(1, "b", 1), Stopped("a", 2, reason="oom"))
    assert actions == [Start("b")]


# ---- sync with the orchestrator ----------------------------------------------------------------

def _sync(models, now=1.0, capacity=None, external=None):
    return Sync(models, capacity={"gpu0": gb(8)} if capacity is None else capacity, external=external or {},
                now=now)


def test_sync_adds_models_with_their_observed_phase_and_the_pools():
    pol = Policy(limit=4, need={"gpu0": gb(2)})
    s, actions = step(State(), _sync({"a": (pol, READY, None), "b": (Policy(), FAILED, "bad gguf")},
                                     external={"gpu0": gb(1)}))
    assert actions == []
    assert s.models["a"] == Model("a", pol, READY, ready_since=1.0, last_used=1.0)  # residency and ttl count from here
    assert s.models["b"] == Model("b", Policy(), FAILED, reason="bad gguf", last_used=1.0)
    assert (dict(s.capacity), dict(s.external)) == ({"gpu0": gb(8)}, {"gpu0": gb(1)})
    s, actions = step(s, Arrive(1, "a", 2))
    assert actions == [Admit(1, "a")]


def test_a_ready_model_first_seen_in_a_listing_gets_its_whole_ttl():
    # A gateway restarted next to running models: its first tick must not stop them all.
    s, _ = step(State(), _sync({"a": (Policy(ttl_s=60), READY, None)}, now=500.0))
    assert step(s, Tick(501.0))[1] == []
    assert step(s, Tick(560.0))[1] == [Stop("a", "idle for 60 s", StopKind.IDLE)]


def test_sync_removing_a_model_rejects_its_waiters_with_404():
    s = state(model("a", STARTING, waiting=[1, 2]), model("b", READY))
    s, actions = step(s, _sync({"b": (Policy(), READY, None)}))
    assert actions == [Reject(rid, "a", 404, "Model 'a' was removed.", 0) for rid in (1, 2)]
    assert list(s.models) == ["b"]
    s, actions = step(s, Arrive(3, "a", 2))
    assert actions == [R(3, "a", 404, 0)]


@pytest.mark.parametrize("known, observed, result", [
    (STARTING, STOPPED, STARTING),  # our start is under way; the listing is older than it
    (STARTING, FAILED, STARTING),  # StartFailed will say so
    (STARTING, READY, READY),  # ready before our start call returned: good, use it
    (STOPPING, READY, STOPPING),  # our stop is under way
    (STOPPING, STOPPED, STOPPING),  # Stopped will say so
    (STOPPING, FAILED, STOPPING),
    (READY, STOPPED, STOPPED),  # stopped behind our back
    (READY, FAILED, FAILED),  # crashed
    (STOPPED, READY, READY),  # started by hand / preloaded
    (FAILED, STOPPED, STOPPED),
    (READY, STARTING, STARTING),  # restarted by Docker after a crash, or by an admin: wait for it
    (STOPPED, STARTING, STARTING),
], ids=lambda v: v.value if isinstance(v, Phase) else None)
def test_sync_does_not_override_our_own_transitions(known, observed, result):
    s = state(model("a", known))
    s, _ = step(s, _sync({"a": (Policy(), observed, "why" if observed is FAILED else None)}))
    assert s.models["a"].phase is result
    assert s.models["a"].reason == ("why" if result is FAILED else None)


def test_sync_ready_during_our_start_admits_at_once_and_our_started_changes_nothing():
    s = state(model("a", STARTING, waiting=[1]))
    s, actions = step(s, _sync({"a": (Policy(), READY, None)}))
    assert actions == [Admit(1, "a")]
    s2, actions = step(s, Started("a", 2))
    assert actions == [] and s2.models["a"].in_flight == 1


def test_sync_keeps_queue_and_in_flight_and_takes_the_new_policy():
    s = state(model("a", READY, limit=1, in_flight=1, waiting=[5, 6], last_used=3))
    s, actions = step(s, _sync({"a": (Policy(limit=3), READY, None)}))
    assert actions == [Admit(5, "a"), Admit(6, "a")]  # the raised limit frees two slots
    assert (s.models["a"].in_flight, s.models["a"].last_used) == (3, 3)


def test_sync_with_less_room_makes_waiting_models_wait_or_fail():
    s = state(model("a", READY, need=gb(4), in_flight=1), model("b", need=gb(4)))
    s, actions = run(s, _sync({"a": (Policy(need={"gpu0": gb(4)}), READY, None),
                               "b": (Policy(need={"gpu0": gb(4)}), STOPPED, None)}, external={"gpu0": gb(1)}),
                     Arrive(1, "b", 2))
    assert actions == []  # 1 GB short, a is busy: wait
    s, actions = run(s, _sync({"a": (Policy(need={"gpu0": gb(4)}), READY, None),
                               "b": (Policy(need={"gpu0": gb(4)}), STOPPED, None)}, external={"gpu0": gb(5)}))
    assert actions == [R(1, "b", 503, 30, "with 5.0 GiB used by pinned models and other processes")]


def test_a_start_we_did_not_ask_for_is_asked_for_too():
    """A model seen starting that we did not start (a preload, a crash restart) gets a Start of
    ours, whose Started / StartFailed ends the phase: never STARTING for good."""
    pol = Policy(pinned=True, need={"gpu0": gb(6)})
    s, first = step(State(capacity={"gpu0": gb(8)}), _sync({"p": (pol, STARTING, "loading the model")}))
    s, then = step(s, _sync({"p": (pol, FAILED, "exited with code 1")}, now=2))
    # either the orchestrator's word ends it, or we asked for a Start whose result will
    assert s.models["p"].phase is not STARTING or Start("p") in first + then


# ---- GPUs: wait for memory to return, one start at a time, retry after out-of-memory -----------

A_B_A_B = [  # one 8 GB GPU; a and b need 6 GB each, so they take turns
    (Arrive(1, "a", 0), [Start("a")], {"a": STARTING}),
    (Started("a", 1), [Admit(1, "a")], {"a": READY}),
    (Finish(1, "a", 2), [], {"a": READY}),
    (Arrive(2, "b", 3), [Stop("a", "making room for 'b'", StopKind.ROOM)], {"a": STOPPING, "b": STOPPED}),
    (Stopped("a", 4), [], {"a": RELEASING}),  # the container is gone, the memory not yet seen free: b waits
    (Tick(5), [], {"a": RELEASING}),
    (Released("a", 6), [Start("b")], {"a": STOPPED, "b": STARTING}),  # NVML shows it free: now b
    (Started("b", 7), [Admit(2, "b")], {"b": READY}),
    (Finish(2, "b", 8), [], {"b": READY}),
    (Arrive(3, "a", 9), [Stop("b", "making room for 'a'", StopKind.ROOM)], {"b": STOPPING}),
    (Stopped("b", 10), [], {"b": RELEASING}),
    (Tick(19.9), [], {"b": RELEASING}),
    (Tick(20), [Start("a")], {"b": STOPPED, "a": STARTING}),  # NVML never said so: the 10 s bound goes on
    (Released("b", 21), [], {"b": STOPPED}),  # late news changes nothing
    (Started("a", 22), [Admit(3, "a")], {"a": READY}),
]


def test_a_b_a_b_on_one_gpu_waits_for_the_memory_to_return():
    s = state(model("a", need=gb(6)), model("b", need=gb(6)), gpus=["gpu0"])
    for event, expected, phases in A_B_A_B:
        s, actions = step(s, event)
        assert actions == expected, event
        assert {n: s.models[n].phase for n in phases} == phases, event
        assert _memory_ok(s)


def test_a_b_a_b_on_a_cpu_budget_needs_no_release():
    s = state(model("a", READY, need=gb(6)), model("b", need=gb(6)), capacity={"budget": gb(8)})
    s = State(models={n: replace(m, policy=replace(m.policy, need={"budget": gb(6)})) for n, m in s.models.items()},
              capacity={"budget": gb(8)})
    s, steps = trace(s, Arrive(1, "b", 1), Stopped("a", 2))
    assert steps == [[Stop("a", "making room for 'b'", StopKind.ROOM)], [Start("b")]]  # no NVML: released at once
    assert s.models["a"].phase is STOPPED


@pytest.mark.parametrize("s, events, expected", [
    pytest.param(state(model("a", need=gb(3)), model("b", need=gb(3)), gpus=["gpu0"]),
                 [Arrive(1, "a", 0), Arrive(2, "b", 0), Started("a", 1)],
                 [Start("a"), Admit(1, "a"), Start("b")], id="second-start-waits-for-the-first"),
    pytest.param(state(model("a", need=gb(3)), model("b", need=gb(3)), gpus=["gpu0"]),
                 [Arrive(1, "a", 0), Arrive(2, "b", 0), StartFailed("a", "bad file", 1)],
                 [Start("a"), R(1, "a", 503, 30, "bad file"), Start("b")], id="a-failed-start-also-ends-the-wait"),
    pytest.param(state(model("a", need=gb(3)), model("b", need=gb(3)), gpus=[]),
                 [Arrive(1, "a", 0), Arrive(2, "b", 0)],
                 [Start("a"), Start("b")], id="cpu-budget-starts-together"),
    pytest.param(state(model("a", need={"gpu0": gb(3)}), model("b", need={"gpu1": gb(3)}),
                       capacity={"gpu0": gb(8), "gpu1": gb(8)}, gpus=["gpu0", "gpu1"]),
                 [Arrive(1, "a", 0), Arrive(2, "b", 0)],
                 [Start("a"), Start("b")], id="different-gpus-start-together"),
    pytest.param(state(model("a", READY, need=gb(6), in_flight=1), model("b", need=gb(4)), gpus=["gpu0"]),
                 [Arrive(1, "b", 0), Sync({"a": (Policy(need={"gpu0": gb(6)}), FAILED, "exited with code 139"),
                                           "b": (Policy(need={"gpu0": gb(4)}), STOPPED, None)},
                                          {"gpu0": gb(8)}, {}, 1, frozenset({"gpu0"}))],
                 [Start("b")], id="stopped-behind-our-back-is-free-at-once"),  # a crash: the process is gone
])
def test_gpu_start_decisions(s, events, expected):
    s, actions = run(s, *events)
    assert actions == expected
    assert _memory_ok(s)


def test_releasing_is_ours_the_listing_does_not_end_it():
    s = state(model("a", RELEASING, need=gb(6)), model("b", need=gb(6), waiting=[1]), gpus=["gpu0"])
    s, actions = step(s, Sync({"a": (Policy(need={"gpu0": gb(6)}), STOPPED, None),
                               "b": (Policy(need={"gpu0": gb(6)}), STOPPED, None)},
                              {"gpu0": gb(8)}, {}, 1, frozenset({"gpu0"})))
    assert actions == [] and s.models["a"].phase is RELEASING
    s, actions = step(s, Released("a", 2))
    assert actions == [Start("b")]


def test_waiting_for_a_release_or_a_start_says_so_on_timeout():
    s = state(model("a", RELEASING, need=gb(6)), model("b", need=gb(6)), gpus=["gpu0"], timeout=5)
    s = replace(s, release_timeout_s=60)
    _, actions = run(s, Arrive(1, "b", 0), Tick(5))
    assert actions == [R(1, "b", 503, 5, "waiting for a to free its memory")]
    s = state(model("a", STARTING, need=gb(2), waiting=[(9, 3.0)]), model("b", need=gb(2)), gpus=["gpu0"], timeout=5)
    _, actions = run(s, Arrive(1, "b", 0), Tick(5))
    assert actions == [R(1, "b", 503, 5, "one start at a time per GPU: a still loading")]


OOM = [
    pytest.param(  # c fits in the 4 GB left; it runs out of memory: the least recently used idle model makes room
        state(model("a", READY, need=gb(2), last_used=1), model("b", READY, need=gb(2), last_used=2),
              model("c", need=gb(4)), gpus=["gpu0"]),
        [Arrive(1, "c", 5), StartFailed("c", "cudaMalloc failed: out of memory", 6, oom=True), Stopped("a", 7),
         Released("a", 8), Started("c", 9)],
        [Start("c"), Stop("a", "making room for 'c'", StopKind.ROOM), Start("c"), Admit(1, "c")],
        {"a": STOPPED, "b": READY, "c": READY}, id="evicts-lru-then-retries"),
    pytest.param(  # the retry runs out too: 503 naming the need, the free memory and what is loaded
        state(model("a", READY, need=gb(2), last_used=1), model("b", READY, need=gb(2), last_used=2, in_flight=1),
              model("c", need=gb(4)), gpus=["gpu0"]),
        [Arrive(1, "c", 5), StartFailed("c", "oom", 6, oom=True), Stopped("a", 7), Released("a", 8),
         StartFailed("c", "CUDA error: out of memory", 9, oom=True)],
        [Start("c"), Stop("a", "making room for 'c'", StopKind.ROOM), Start("c"),
         R(1, "c", 503, 30, "ran out of GPU memory while loading, also after making room",
           "CUDA error: out of memory", "needs 4.0 GiB in gpu0", "free: gpu0 6.0 GiB", "Loaded: b 2.0 GiB (busy)")],
        {"a": STOPPED, "c": FAILED}, id="second-oom-is-503"),
    pytest.param(  # nothing idle to stop, but room beyond its need: retried at once
        state(model("c", need=gb(4)), gpus=["gpu0"]),
        [Arrive(1, "c", 5), StartFailed("c", "oom", 6, oom=True), Started("c", 7)],
        [Start("c"), Start("c"), Admit(1, "c")], {"c": READY}, id="room-to-spare-retries-at-once"),
    pytest.param(  # a pinned model leaves no room for a margin: retried with what there is
        state(model("p", READY, need=gb(4), pinned=True), model("c", need=gb(4)), gpus=["gpu0"]),
        [Arrive(1, "c", 5), StartFailed("c", "oom", 6, oom=True)],
        [Start("c"), Start("c")], {"p": READY, "c": STARTING}, id="margin-capped-by-what-can-be-freed"),
    pytest.param(  # the only model in the way answers someone: the retry waits for it
        state(model("a", READY, need=gb(4), in_flight=1), model("c", need=gb(4)), gpus=["gpu0"]),
        [Arrive(1, "c", 5), StartFailed("c", "oom", 6, oom=True), Finish(0, "a", 7), Stopped("a", 8),
         Released("a", 9)],
        [Start("c"), Stop("a", "making room for 'c'", StopKind.ROOM), Start("c")], {"c": STARTING},
        id="busy-model-waited-for"),
    pytest.param(  # the client left: no retry for nobody
        state(model("c", need=gb(4)), gpus=["gpu0"]),
        [Arrive(1, "c", 5), Cancel(1, "c", 5.5), StartFailed("c", "oom", 6, oom=True)],
        [Start("c")], {"c": FAILED}, id="nobody-waiting-no-retry"),
    pytest.param(  # not a memory problem: no retry
        state(model("a", READY, need=gb(2)), model("c", need=gb(4)), gpus=["gpu0"]),
        [Arrive(1, "c", 5), StartFailed("c", "unknown model architecture", 6)],
        [Start("c"), R(1, "c", 503, 30, "could not be started: unknown model architecture")],
        {"a": READY, "c": FAILED}, id="other-failure-no-retry"),
]


@pytest.mark.parametrize("s, events, expected, phases", OOM)
def test_out_of_memory_retry(s, events, expected, phases):
    s, actions = run(s, *events)
    assert actions == expected
    assert {n: s.models[n].phase for n in phases} == phases
    assert _memory_ok(s)


def test_a_successful_retry_ends_the_retry_and_a_later_oom_retries_again():
    s = state(model("c", need=gb(4)), gpus=["gpu0"])
    s, _ = run(s, Arrive(1, "c", 0), StartFailed("c", "oom", 1, oom=True), Started("c", 2))
    assert not s.models["c"].oom_retry
    s, actions = run(s, Stopped("c", 3, reason="killed"), Released("c", 4), Arrive(2, "c", 5),
                     StartFailed("c", "oom", 6, oom=True))
    assert actions == [Start("c"), Start("c")]


# ---- swap without thrash: minimum residency, bounded wait ------------------------------------------

def _two(group: bool, residency: float = 0.0, max_wait: float | None = None, *, a_phase=READY, **a) -> State:
    """Models a and b that cannot both run: one swap group, or 6 GB each in 8 GB."""
    def pol(**kw):
        return Policy(swap_group="g" if group else None, need={"gpu0": gb(6)}, min_residency_s=residency,
                      max_wait_s=max_wait, **kw)
    return state(Model("a", pol(), a_phase, **a), Model("b", pol()))


def _evicts(group: bool) -> Stop:
    return Stop("a", "swap group 'g': 'b' is wanted", StopKind.SWAP_GROUP) if group \
        else Stop("a", "making room for 'b'", StopKind.ROOM)


@pytest.mark.parametrize("group", [True, False], ids=["swap-group", "memory"])
def test_a_model_is_not_swapped_out_within_its_residency(group):
    s, actions = run(_two(group, residency=10, ready_since=0.0), Arrive(1, "b", 3), Tick(9.9))
    assert actions == []  # a stays: ready 9.9 s ago, idle, but within its 10 s
    s, actions = run(s, Tick(10))
    assert actions == [_evicts(group)]
    s, actions = run(s, Stopped("a", 10.5), Started("b", 11))
    assert actions == [Start("b"), Admit(1, "b")]


@pytest.mark.parametrize("group", [True, False], ids=["swap-group", "memory"])
def test_within_its_residency_a_model_keeps_serving_its_own_requests(group):
    s, actions = run(_two(group, residency=10, ready_since=0.0), Arrive(1, "b", 1), Arrive(2, "a", 2),
                     Finish(2, "a", 2.5), Arrive(3, "a", 4), Finish(3, "a", 4.5))
    assert actions == [Admit(2, "a"), Admit(3, "a")]
    assert rids(s.models["b"]) == [1]
    s, actions = run(s, Arrive(4, "a", 9.8), Tick(10))
    assert actions == [Admit(4, "a")]  # past its residency but busy: still not stopped
    s, actions = run(s, Finish(4, "a", 10.3))
    assert actions == [_evicts(group)]


@pytest.mark.parametrize("group", [True, False], ids=["swap-group", "memory"])
def test_residency_zero_swaps_as_soon_as_the_loaded_model_is_idle(group):
    s, actions = run(_two(group, ready_since=0.0), Arrive(1, "b", 1))
    assert actions == [_evicts(group)]


@pytest.mark.parametrize("group", [True, False], ids=["swap-group", "memory"])
def test_a_starving_model_ends_a_residency(group):
    s, actions = run(_two(group, residency=60, max_wait=5, ready_since=0.0), Arrive(1, "b", 1), Tick(5.9))
    assert actions == []
    s, actions = run(s, Tick(6))
    assert actions == [Stop("a", _evicts(group).reason + " (it waited 5 s, its max_wait)", _evicts(group).kind)]


@pytest.mark.parametrize("group", [True, False], ids=["swap-group", "memory"])
def test_a_starving_model_drains_a_busy_one_and_goes_next(group):
    # a answers 1 and has 2 waiting; b waits since 1. At 31 b has waited its 30 s.
    s = _two(group, residency=10, max_wait=30, ready_since=0.0, in_flight=1, queue=(Waiter(2, 0.5),))
    s, actions = run(s, Arrive(3, "b", 1), Tick(30.9))
    assert actions == []
    s, actions = run(s, Tick(31), Finish(1, "a", 31.5), Arrive(4, "a", 31.6))
    # 2 not admitted
    assert actions == [Stop("a", _evicts(group).reason + " (it waited 30 s, its max_wait)", _evicts(group).kind)]
    assert rids(s.models["a"]) == [2, 4]  # a's requests wait for its next turn
    s, actions = run(s, Stopped("a", 32))
    assert actions == [Start("b")]  # b first: a's wait for memory counts from its stop
    s, actions = run(s, Started("b", 33))
    assert actions == [Admit(3, "b")]


def test_a_starving_model_yields_the_busy_one_but_nothing_more():
    s = _two(True, residency=10, max_wait=30, ready_since=0.0, in_flight=1, queue=(Waiter(2, 0.5),))
    s, _ = run(s, Arrive(3, "b", 1), Tick(31))
    assert s.models["a"].yielding_to == "b"
    s, actions = run(s, Cancel(3, "b", 31.2))  # b's client left: a goes on serving
    assert s.models["a"].yielding_to is None and actions == []
    s, actions = run(s, Finish(1, "a", 31.5))
    assert actions == [Admit(2, "a")]


@dataclass
class _Replay:
    """Feeds ``arrivals`` ((time, model) pairs) through ``step`` in time order, with the effects' answers
    on time: each admitted request finishes ``service`` s later, a start is ready ``load`` s after it is
    asked, a stop done ``unload`` s after. A Tick each 0.25 s, as gateway/scheduling/lifecycle.py does."""
    s: State
    service: float = 0.5
    load: float = 0.5
    unload: float = 0.1
    starts: int = 0
    stops: int = 0
    waits: dict = field(default_factory=dict)  # rid -> seconds until admitted
    refused: dict = field(default_factory=dict)  # rid -> Reject

    def run(self, arrivals: list[tuple[float, str]], until: float) -> "_Replay":
        timeline, order, arrived = [], itertools.count(), {}

        def at(t, event):
            heapq.heappush(timeline, (t, next(order), event))

        for rid, (t, name) in enumerate(arrivals, 1):
            at(t, Arrive(rid, name, t))
            arrived[rid] = t
        for k in range(int(until / 0.25) + 1):
            at(k * 0.25, Tick(k * 0.25))
        while timeline:
            t, _, event = heapq.heappop(timeline)
            self.s, actions = step(self.s, event)
            for action in actions:
                if isinstance(action, Admit):
                    self.waits[action.rid] = t - arrived[action.rid]
                    at(t + self.service, Finish(action.rid, action.model, t + self.service))
                elif isinstance(action, Reject):
                    self.refused[action.rid] = action
                elif isinstance(action, Start):
                    self.starts += 1
                    at(t + self.load, Started(action.model, t + self.load))
                elif isinstance(action, Stop):
                    self.stops += 1
                    at(t + self.unload, Stopped(action.model, t + self.unload))
        return self


def _alternating(seconds: int) -> list[tuple[float, str]]:
    return [(float(i), "ab"[i % 2]) for i in range(seconds)]


@pytest.mark.parametrize("load", [0.5, 2.0], ids=["load-0.5s", "load-2s"])
@pytest.mark.parametrize("group", [True, False], ids=["swap-group", "memory"])
def test_alternating_requests_are_served_in_batches_not_one_swap_each(group, load):
    """Two apps alternate, A B A B ..., a request a second for 60 s, 0.5 s each: today (no residency)
    it swaps at almost every request; with a 10 s residency (30 s max wait) once per batch."""
    before = _Replay(_two(group, a_phase=STOPPED), load=load).run(_alternating(60), until=90)
    after = _Replay(_two(group, residency=10, max_wait=30, a_phase=STOPPED), load=load).run(_alternating(60), 90)
    print(f"\n{'swap group' if group else 'memory'}, load {load} s: starts {before.starts} -> {after.starts}, "
          f"stops {before.stops} -> {after.stops}, longest wait {max(before.waits.values()):.1f} -> "
          f"{max(after.waits.values()):.1f} s")
    for replay in (before, after):
        assert len(replay.waits) == 60 and not replay.refused  # every request served
    assert after.starts * 2.5 <= before.starts
    assert after.starts <= 8  # about one per 10 s residency, plus its stop and start
    assert max(after.waits.values()) <= 30  # nobody waited beyond the bound
    if load < 1:
        assert before.starts >= 40 and after.starts * 6 <= before.starts  # nearly one swap per request, before


@pytest.mark.parametrize("group", [True, False], ids=["swap-group", "memory"])
def test_a_busy_model_cannot_starve_its_rival_beyond_max_wait(group):
    """a gets a request every 0.4 s (each 0.5 s: never idle); b one at 1 s. Without a bound b waits
    until its queue timeout; with max_wait 30 s it is served once a's request in flight ends."""
    arrivals = [(1.0, "b")] + [(i * 0.4, "a") for i in range(200)]

    def hammer(max_wait):
        s = _two(group, residency=10, max_wait=max_wait, a_phase=STOPPED)
        s = replace(s, queue_timeout_s=100.0,
                    models={n: replace(m, policy=replace(m.policy, queue=1000)) for n, m in s.models.items()})
        return _Replay(s).run(arrivals, until=150)

    bounded = hammer(30.0)
    assert 30 <= bounded.waits[1] <= 30 + 0.5 + 0.1 + 0.5 + 0.25  # + a's last request, its stop, b's start, a tick
    assert not bounded.refused  # a's requests wait for its next turn, none lost
    assert len(bounded.waits) == len(arrivals)
    unbounded = hammer(None)
    assert 1 not in unbounded.waits and unbounded.refused[1].status == 503  # today: the queue timeout


# ---- GPUs: placement -------------------------------------------------------------------------------

TWO_12 = {"gpu0": gb(12), "gpu1": gb(12)}


def demand(total_gb: float, per_gpu_gb: float = 1, pools=("gpu0", "gpu1")) -> Demand:
    return Demand(gb(total_gb - per_gpu_gb), {p: gb(per_gpu_gb) for p in pools}, tuple(pools))


def placed(s: State, name: str) -> dict:
    return dict(s.models[name].placement.need)


def test_two_12_gb_gpus_a_6_gb_model_then_a_16_gb_one_split_next_to_it():
    s = state(model("six", demand=demand(6)), model("sixteen", demand=demand(16)), capacity=TWO_12,
              gpus=TWO_12)
    s, actions = run(s, Arrive(1, "six", 0))
    assert actions == [Start("six", Placement({"gpu0": gb(6)}))]  # one GPU; ties go to the lower index
    s, actions = run(s, Started("six", 1), Arrive(2, "sixteen", 2))
    start = actions[-1]
    assert isinstance(start, Start) and start.placement.pools == ("gpu0", "gpu1")
    # 15 GB of layers over 5 + 11 GB of spare room, each GPU paying its 1 GB per-GPU part
    assert placed(s, "sixteen") == {"gpu0": gb(1) + gb(15) * 5 // 16, "gpu1": gb(1) + gb(15) * 11 // 16}
    assert start.placement.split == (4800, 10560)
    assert _memory_ok(s)


def test_two_12_gb_gpus_the_16_gb_model_first_then_the_6_gb_one_is_split_over_what_is_left():
    s = state(model("sixteen", demand=demand(16)), model("six", demand=demand(6)), capacity=TWO_12, gpus=TWO_12)
    s, actions = run(s, Arrive(1, "sixteen", 0), Started("sixteen", 1), Arrive(2, "six", 3))
    assert placed(s, "sixteen") == {"gpu0": gb(8.5), "gpu1": gb(8.5)}  # split evenly: 3.5 GB left on each
    assert actions[-1] == Start("six", Placement({"gpu0": gb(3.5), "gpu1": gb(3.5)}, (2560, 2560)))
    assert _memory_ok(s)


def test_a_model_that_fits_only_without_an_idle_one_evicts_it():
    s = state(model("sixteen", demand=demand(16)), model("eight", demand=demand(8)), capacity=TWO_12, gpus=TWO_12)
    s, actions = run(s, Arrive(1, "sixteen", 0), Started("sixteen", 1), Finish(1, "sixteen", 2),
                     Arrive(2, "eight", 3))
    # 7 GB of layers > 2.5 + 2.5 spare
    assert actions[-1] == Stop("sixteen", "making room for 'eight'", StopKind.ROOM)
    s, actions = run(s, Stopped("sixteen", 4), Released("sixteen", 5))
    assert actions == [Start("eight", Placement({"gpu0": gb(8)}))]


def test_gpus_in_the_spec_are_respected():
    s = state(model("one", demand=demand(6, pools=("gpu1",))), capacity={"gpu0": gb(24), "gpu1": gb(12)},
              gpus=["gpu0", "gpu1"])
    _, actions = run(s, Arrive(1, "one", 0))
    assert actions == [Start("one", Placement({"gpu1": gb(6)}))]


def test_best_fit_and_a_start_under_way_moves_the_next_model_to_another_gpu():
    s = state(model("x", READY, need={"gpu0": gb(2)}), model("a", demand=demand(6)), model("b", demand=demand(4)),
              capacity={"gpu0": gb(12), "gpu1": gb(8)}, gpus=["gpu0", "gpu1"])
    s, actions = run(s, Arrive(1, "a", 0))
    assert actions == [Start("a", Placement({"gpu1": gb(6)}))]  # 2 GB left there, 4 on gpu0: the tighter fit
    s, actions = run(s, Arrive(2, "b", 1))
    assert actions == [Start("b", Placement({"gpu0": gb(4)}))]


@pytest.mark.parametrize("s, fragments", [
    (state(model("huge", demand=demand(30)), capacity=TWO_12, gpus=TWO_12),
     ["needs 30.0 GiB on one GPU", "or 29.0 GiB split across GPUs plus 1.0 GiB on each",
      "at most gpu0 12.0 GiB, gpu1 12.0 GiB can be free", "Loaded: nothing"]),
    (state(model("one", demand=demand(16, pools=("gpu1",))), capacity=TWO_12, gpus=TWO_12),
     ["needs 16.0 GiB on one GPU", "at most gpu1 12.0 GiB"]),
    (state(model("p", READY, need={"gpu0": gb(10)}, pinned=True), model("big", demand=demand(16)),
           capacity=TWO_12, gpus=TWO_12),
     ["at most gpu0 2.0 GiB, gpu1 12.0 GiB", "Loaded: p 10.0 GiB (pinned)"]),
    (state(model("three", demand=demand(2, pools=("gpu3",))), capacity=TWO_12, gpus=TWO_12),
     ["it may only use gpu3, which this machine does not have"]),
], ids=["bigger-than-both", "gpus-1-only", "pinned-in-the-way", "no-such-gpu"])
def test_fits_nowhere_is_503_at_once_with_the_explanation(s, fragments):
    s, actions = run(s, Arrive(1, list(s.models)[-1], 0))
    assert actions == [R(1, list(s.models)[-1], 503, 30, "cannot be started", *fragments)]


def test_a_retry_after_oom_on_a_split_pays_the_margin_on_each_gpu():
    s = state(model("a", READY, demand=demand(4), placement=Placement({"gpu1": gb(4)}), last_used=1),
              model("big", demand=demand(16)), capacity=TWO_12, gpus=TWO_12)
    s, actions = run(s, Arrive(1, "big", 2))
    assert actions[0].placement.pools == ("gpu0", "gpu1")
    s, actions = run(s, StartFailed("big", "oom", 3, oom=True))
    # a quarter more on each GPU (4 GB) could never fit in 24; half that can, once a is gone
    assert actions == [Stop("a", "making room for 'big'", StopKind.ROOM)]
    s, actions = run(s, Stopped("a", 4), Released("a", 5))
    assert [type(a) for a in actions] == [Start] and actions[0].placement.need == {"gpu0": gb(10.5), "gpu1": gb(10.5)}


# ---- GPUs on two nodes: a model goes on either, never split across them ----------------------------

ON_N1, ON_N2 = "n1/gpu0", "n2/gpu0"
TWO_NODES = {ON_N1: gb(12), ON_N2: gb(12)}


@pytest.mark.parametrize("room, wanted, expected", [
    (TWO_NODES, demand(6, pools=(ON_N1, ON_N2)), Placement({ON_N1: gb(6)})),  # a tie: the first node
    ({ON_N1: gb(12), ON_N2: gb(8)}, demand(6, pools=(ON_N1, ON_N2)), Placement({ON_N2: gb(6)})),  # best fit
    ({ON_N1: gb(12), ON_N2: gb(12)}, demand(6, pools=(ON_N2,)), Placement({ON_N2: gb(6)})),  # the spec's gpus
    # 16 GB would fit in 12 + 12, but not in one process: there is no split across nodes
    (TWO_NODES, demand(16, pools=(ON_N1, ON_N2)), None),
    # the node with two GPUs takes the split; the other node's GPU is no part of it
    ({ON_N1: gb(12), "n2/gpu0": gb(10), "n2/gpu1": gb(10)}, demand(16, pools=(ON_N1, "n2/gpu0", "n2/gpu1")),
     Placement({"n2/gpu0": gb(8.5), "n2/gpu1": gb(8.5)}, (7680, 7680))),
    # both nodes could split it: the one that needs the fewest GPUs
    ({"n1/gpu0": gb(6), "n1/gpu1": gb(6), "n1/gpu2": gb(6), "n2/gpu0": gb(10), "n2/gpu1": gb(10)},
     demand(16, pools=("n1/gpu0", "n1/gpu1", "n1/gpu2", "n2/gpu0", "n2/gpu1")),
     Placement({"n2/gpu0": gb(8.5), "n2/gpu1": gb(8.5)}, (7680, 7680))),
    # the local node's gpu0 and another node's gpu0 are two pools
    ({"gpu0": gb(4), ON_N2: gb(12)}, demand(6, pools=("gpu0", ON_N2)), Placement({ON_N2: gb(6)})),
], ids=["tie-first-node", "best-fit", "spec-gpus", "no-split-across-nodes", "split-within-a-node",
        "fewest-gpus-node", "local-and-remote-gpu0"])
def test_placement_on_two_nodes(room, wanted, expected):
    placement = place(wanted, room)
    assert placement == expected
    if placement is not None:
        assert len({PoolId.parse(p).node for p in placement.pools}) == 1


def test_two_nodes_each_take_a_model_and_one_bigger_than_either_gpu_is_refused():
    both = (ON_N1, ON_N2)
    s = state(model("a", demand=demand(10, pools=both)), model("b", demand=demand(10, pools=both)),
              model("c", demand=demand(16, pools=both)), capacity=TWO_NODES, gpus=TWO_NODES)
    s, actions = run(s, Arrive(1, "a", 0), Started("a", 1), Arrive(2, "b", 2))
    assert actions == [Start("a", Placement({ON_N1: gb(10)})), Admit(1, "a"), Start("b", Placement({ON_N2: gb(10)}))]
    s, actions = run(s, Arrive(3, "c", 3))
    assert actions == [R(3, "c", 503, 30, "cannot be started", "needs 16.0 GiB on one GPU",
                         f"at most {ON_N1} 12.0 GiB, {ON_N2} 12.0 GiB can be free")]


@pytest.mark.parametrize("placement, wire, body", [
    (Placement({"gpu1": gb(6)}), WirePlacement(gpus=(1,)), {"gpus": [1], "tensor_split": None}),
    (Placement({"n2/gpu0": gb(8), "n2/gpu1": gb(8)}, (7680, 7680)),
     WirePlacement(node="n2", gpus=(0, 1), tensor_split=(7680, 7680)),
     {"node": "n2", "gpus": [0, 1], "tensor_split": [7680, 7680]}),
], ids=["local", "another-node"])
def test_a_placement_goes_on_the_wire_with_its_node(placement, wire, body):
    assert placement.wire() == wire
    assert start_body(wire) == body  # the local node left out: an orchestrator from before nodes reads it


def test_a_placement_across_nodes_has_no_wire_form():
    with pytest.raises(ValueError, match="one node"):
        Placement({ON_N1: gb(6), ON_N2: gb(6)}, (1, 1)).wire()


# ---- random sequences: invariants after every step ---------------------------------------------

def _memory_ok(s: State) -> bool:
    """Models holding memory (starting, ready, or still stopping) plus others' use fit every pool."""
    for pool, cap in s.capacity.items():
        used = s.external.get(pool, 0) + sum(m.held.get(pool, 0) for m in s.models.values()
                                             if m.phase in HOLDS_MEMORY)
        if used > cap:
            return False
    return True


def _random_policy(rng: random.Random) -> Policy:
    pools = rng.choice([{}, {"gpu0"}, {"gpu0"}, {"gpu1"}, {"gpu0", "gpu1"}, {"disk"}])
    placed = rng.random() < 0.3  # a Demand: placed on one GPU or split when it starts
    return Policy(limit=rng.randint(1, 3), queue=rng.choice([0, 1, 2, 4]), ttl_s=rng.choice([0, 0, 3, 8]),
                  pinned=rng.random() < 0.1, swap_group=rng.choice([None, None, "g"]),
                  need={} if placed else {p: gb(rng.choice([1, 2, 3, 4, 5])) for p in sorted(pools)},
                  demand=demand(rng.choice([2, 4, 6, 9]), rng.choice([0.5, 1]),
                                rng.choice([("gpu0", "gpu1"), ("gpu1",)])) if placed else None,
                  min_residency_s=rng.choice([0, 0, 2, 10]), max_wait_s=rng.choice([None, 3.0, 10.0]))


@dataclass
class Sim:
    """The effect layer, as a test double: remembers what it was asked and feeds back the results."""
    s: State
    now: float = 0.0
    next_rid: int = 1
    asked: set = field(default_factory=set)  # rids that arrived
    answered: dict = field(default_factory=dict)  # rid -> Admit | Reject
    cancelled: set = field(default_factory=set)
    running: dict = field(default_factory=dict)  # admitted rid -> model, not yet finished
    pending: dict = field(default_factory=dict)  # model -> "start" | "stop": asked, no result fed back yet
    log: list = field(default_factory=list)

    def feed(self, event) -> list:
        before = self.s
        self.s, actions = step(self.s, event)
        self.log.append((event, actions))
        if isinstance(event, (Started, StartFailed, Stopped, Released)):
            self.pending.pop(event.model, None)
        for name, m in self.s.models.items():  # stopped and waiting for its memory; or that wait just ended
            if m.phase is RELEASING and name not in self.pending:
                self.pending[name] = "release"
            elif self.pending.get(name) == "release" and m.phase is not RELEASING:
                del self.pending[name]
        self.check(before, event, actions)
        return actions

    def check(self, before: State, event, actions: list) -> None:
        s, where = self.s, f"after {event!r} -> {actions!r}"
        for action in actions:
            if isinstance(action, (Admit, Reject)):
                assert action.rid in self.asked, where
                assert action.rid not in self.answered, f"rid {action.rid} answered twice, {where}"
                assert action.rid not in self.cancelled, where
                self.answered[action.rid] = action
                if isinstance(action, Admit):
                    self.running[action.rid] = action.model
            elif isinstance(action, Start):
                m = s.models[action.model]
                assert action.model not in self.pending, f"second start/stop in flight, {where}"
                # stopped or failed before, or made so by this very event (then restarted for its queue;
                # its memory seen returned; retried after running out of memory)
                assert before.models[action.model].phase in (STOPPED, FAILED) \
                    or isinstance(event, (Stopped, Sync)) \
                    or (before.models[action.model].phase is RELEASING and isinstance(event, (Released, Tick))) \
                    or (isinstance(event, StartFailed) and event.oom and event.model == action.model), where
                assert (action.placement is not None) == (m.policy.demand is not None), where
                # llama.cpp splits layers only across the GPUs of one process: one node
                assert action.placement is None or len({PoolId.parse(p).node for p in action.placement.pools}) == 1, \
                    f"placed across nodes, {where}"
                assert m.phase is STARTING and m.queue, f"started for nobody, {where}"
                self.pending[action.model] = "start"
            elif isinstance(action, Stop):
                m = s.models[action.model]
                assert action.model not in self.pending, where
                starved = "its max_wait" in action.reason
                assert m.in_flight == 0, f"stopped a model answering requests, {where}"
                assert not m.queue or starved, f"stopped a model with requests waiting, {where}"
                was = before.models[action.model]
                if action.swap and was.phase is READY and event.now - was.ready_since < was.policy.min_residency_s:
                    assert starved, f"stopped within its residency for a rival that did not starve, {where}"
                assert not m.policy.pinned or action.kind is StopKind.UNLOAD, where  # only an admin stops a pinned one
                assert m.phase is STOPPING, where
                self.pending[action.model] = "stop"
        if any(isinstance(a, Start) for a in actions):
            assert _memory_ok(s), f"started beyond capacity, {where}"
        assert _memory_ok(s), where  # capacity and others' use are fixed here, so it holds at all times
        for pool in s.gpu_pools:
            starting = [m.name for m in s.models.values() if m.phase is STARTING and m.held.get(pool)]
            assert len(starting) <= 1, f"two starts at once on {pool}: {starting}, {where}"
        groups: dict = {}
        for m in s.models.values():
            p = m.policy
            assert m.in_flight <= p.limit, where
            assert m.in_flight + len(m.queue) <= p.limit + p.queue, where
            if m.phase is READY and m.queue and not m.yielding_to:
                assert m.in_flight == p.limit, f"ready with a free slot and a queue, {where}"
            if m.yielding_to:
                assert m.phase is READY and m.in_flight, f"yielding, yet idle or not ready, {where}"
            wait = p.max_wait_s
            if m.phase in (STOPPED, FAILED) and m.queue and wait is not None \
                    and event.now - max(m.queue[0].since, m.stopped_at) >= wait:
                # No starvation: a model that waited its max_wait for memory is never left waiting on
                # rivals' residency or their new requests: a start or stop is under way, or someone yields.
                assert self.pending or any(o.yielding_to for o in s.models.values()), \
                    f"'{m.name}' starves with nothing under way, {where}"
            assert m.in_flight == sum(1 for mm in self.running.values() if mm == m.name), where
            for w in m.queue:
                assert w.rid in self.asked and w.rid not in self.answered and w.rid not in self.cancelled, where
            if m.phase in (STARTING, STOPPING, RELEASING):
                assert self.pending.get(m.name) == {STARTING: "start", STOPPING: "stop"}.get(m.phase, "release"), where
            if p.swap_group and m.phase in HOLDS_MEMORY:
                groups.setdefault(p.swap_group, []).append(m.name)
        assert all(len(v) == 1 for v in groups.values()), f"swap group members together: {groups}, {where}"
        # The driver sleeps until next_tick: a Tick any earlier must change nothing (when nothing is in
        # motion; while something is, it ticks every TICK_S as before).
        due = next_tick(s, event.now)
        if due != event.now + TICK_S:
            for probe in sorted({event.now, (event.now + min(due, event.now + 1e6)) / 2, due - 1e-6}):
                if event.now <= probe < due:
                    after, acted = step(s, Tick(probe))
                    assert not acted and after.models == s.models, f"a Tick at {probe} before {due} acted, {where}"

    def queued(self) -> list[tuple[int, str]]:
        return [(w.rid, m.name) for m in self.s.models.values() for w in m.queue]

    def random_event(self, rng: random.Random):
        self.now += rng.choice([0, 0, 0.1, 0.5, 1, 2])
        kind = rng.choices(["arrive", "finish", "cancel", "effect", "crash", "tick", "sync"],
                           [30, 20, 5, 20, 2, 15, 3])[0]
        if kind == "arrive":
            rid, self.next_rid = self.next_rid, self.next_rid + 1
            self.asked.add(rid)
            name = "ghost" if rng.random() < 0.03 else rng.choice(sorted(self.s.models))
            return Arrive(rid, name, self.now)
        if kind == "finish" and self.running:
            rid = rng.choice(sorted(self.running))
            return Finish(rid, self.running.pop(rid), self.now)
        if kind == "cancel" and self.queued():
            rid, name = rng.choice(self.queued())
            self.cancelled.add(rid)
            return Cancel(rid, name, self.now)
        if kind == "effect" and self.pending:
            name = rng.choice(sorted(self.pending))
            if self.pending[name] == "stop":
                return Stopped(name, self.now)
            if self.pending[name] == "release":
                return Released(name, self.now)
            if rng.random() < 0.15:
                return StartFailed(name, "no luck", self.now, oom=rng.random() < 0.5)
            return Started(name, self.now)
        if kind == "crash":
            ready = sorted(n for n, m in self.s.models.items() if m.phase is READY and n not in self.pending)
            if ready:
                return Stopped(rng.choice(ready), self.now, reason="crashed")
        if kind == "sync":
            # the orchestrator's view: stale for what we are changing, true for the rest
            views = {n: (m.policy, rng.choice([READY, STOPPED, FAILED]) if m.phase is STOPPING else
                         STARTING if m.phase is STARTING else STOPPED if m.phase is RELEASING else m.phase, m.reason)
                     for n, m in self.s.models.items()}
            return Sync(views, dict(self.s.capacity), dict(self.s.external), self.now, self.s.gpu_pools)
        if kind == "tick" and rng.random() < 0.2:  # a client's keep_alive, an admin's unload
            name = rng.choice(sorted(self.s.models))
            return rng.choice([KeepAlive(name, rng.choice([-1, 0, 5]), self.now), Unload(name, self.now)])
        return Tick(self.now)

    def drain(self) -> None:
        """No more arrivals: feed back every result, finish every request, let residencies end. Everything
        queued must get served or refused without waiting for a timeout (nothing is stuck)."""
        for _ in range(1000):
            if self.pending:
                name = sorted(self.pending)[0]
                self.feed({"stop": Stopped, "release": Released, "start": Started}[self.pending[name]](name, self.now))
            elif self.running:
                rid = sorted(self.running)[0]
                self.feed(Finish(rid, self.running.pop(rid), self.now))
            elif self.queued() and (ends := [m.ready_since + m.policy.min_residency_s for m in self.s.models.values()
                                              if m.phase is READY and m.ready_since + m.policy.min_residency_s > self.now]):
                self.now = min(ends) + 0.01  # a rival's residency holds the room: the clock must reach its end
                self.feed(Tick(self.now))
            else:
                break
        assert not self.pending and not self.running
        assert self.queued() == [], f"stuck without a timeout: {self.queued()}\n{self.s}"


def _two_node_policy(rng: random.Random) -> Policy:
    """A random policy on n1/gpu0, n2/gpu0 and n2/gpu1: a fixed need on either node, or a demand
    placed on one of its GPUs or split across n2's two."""
    policy = _random_policy(rng)
    on_nodes = {"gpu0": ON_N1, "gpu1": ON_N2}
    need = {on_nodes.get(p, p): n for p, n in policy.need.items()}
    pools = rng.choice([(ON_N1, ON_N2, "n2/gpu1"), (ON_N2, "n2/gpu1"), (ON_N1,), (ON_N1, ON_N2)])
    wanted = None if policy.demand is None else demand(rng.choice([2, 4, 6, 9]), rng.choice([0.5, 1]), pools)
    return replace(policy, need=need, demand=wanted)


@pytest.mark.parametrize("seed", range(100))
def test_random_sequences_on_two_nodes_keep_the_invariants(seed):
    rng = random.Random(seed)
    names = ["a", "b", "c", "d"][:rng.randint(3, 4)]
    pools = {ON_N1: gb(rng.choice([4, 6, 8])), ON_N2: gb(rng.choice([4, 6])), "n2/gpu1": gb(rng.choice([4, 6]))}
    s = State(models={n: Model(n, _two_node_policy(rng)) for n in names}, capacity=pools,
              external={ON_N1: gb(rng.choice([0, 0, 1]))}, queue_timeout_s=rng.choice([5.0, 30.0]),
              gpu_pools=rng.choice([frozenset(), frozenset(pools)]))
    sim = Sim(s)
    for _ in range(50):
        sim.feed(sim.random_event(rng))
    sim.drain()
    assert set(sim.answered) | sim.cancelled == sim.asked


@pytest.mark.parametrize("seed", range(300))
def test_random_sequences_keep_the_invariants(seed):
    rng = random.Random(seed)
    names = ["a", "b", "c", "d"][:rng.randint(3, 4)]
    s = State(models={n: Model(n, _random_policy(rng)) for n in names},
              capacity={"gpu0": gb(rng.choice([4, 6, 8])), "gpu1": gb(rng.choice([4, 6]))},
              external={"gpu0": gb(rng.choice([0, 0, 1]))}, queue_timeout_s=rng.choice([5.0, 30.0]),
              gpu_pools=rng.choice([frozenset(), frozenset({"gpu0", "gpu1"})]))
    sim = Sim(s)
    for _ in range(50):
        sim.feed(sim.random_event(rng))
    sim.drain()
    # every request got exactly one answer, or its client left while it was queued
    assert set(sim.answered) | sim.cancelled == sim.asked
    assert not set(sim.answered) & sim.cancelled
    assert all(a.status == 404 for a in sim.answered.values() if isinstance(a, Reject) and a.model == "ghost")


# ---- keep_alive and explicit unload ------------------------------------------------------------

@pytest.mark.parametrize("m, seconds, ttl, pinned", [
    (model("a", READY, ttl=60), 300, 300, False),  # a positive one replaces the ttl
    (model("a", READY, ttl=60), -1, 0, True),  # negative: pinned, never idle-unloaded
    (model("a", READY, ttl=60, pinned=True), 300, 300, True),  # the catalog's pin stays
    (model("a", READY, ttl=60, pinned=True, in_flight=1), 0, 60, False),  # 0 unpins (and unloads once idle)
    (model("a", STOPPED, ttl=60), -1, 0, True),  # before its start: holds for the run to come
], ids=["ttl", "pin", "pinned-stays", "zero-unpins", "stopped"])
def test_keep_alive_overrides_ttl_and_pin(m, seconds, ttl, pinned):
    s, actions = step(state(m), KeepAlive("a", seconds, 10.0))
    assert actions == []
    assert (s.models["a"].policy.ttl_s, s.models["a"].policy.pinned) == (ttl, pinned)


def test_keep_alive_zero_unloads_after_the_request_it_came_with():
    s = state(model("a", READY, ttl=0))
    s, out = trace(s, Arrive(1, "a", 0.0), KeepAlive("a", 0, 0.0), Tick(1.0), Finish(1, "a", 2.0))
    assert out == [[Admit(1, "a")], [], [], [Stop("a", "keep_alive 0: unloaded after its request",
                                                  StopKind.KEEP_ALIVE)]]


def test_keep_alive_zero_on_an_idle_model_unloads_it_at_once():
    s, actions = step(state(model("a", READY)), KeepAlive("a", 0, 1.0))
    assert actions == [Stop("a", "keep_alive 0: unloaded after its request", StopKind.KEEP_ALIVE)]


def test_keep_alive_ttl_counts_from_the_last_use_and_ends_with_the_run():
    s = state(model("a", READY, ttl=600))
    s, out = trace(s, KeepAlive("a", 5, 100.0), Tick(104.9), Tick(105.0))
    assert out == [[], [], [Stop("a", "idle for 5 s", StopKind.IDLE)]]
    s, _ = step(s, Stopped("a", 106.0))  # the override was for that run: the catalog's ttl is back
    assert (s.models["a"].policy.ttl_s, s.models["a"].keep_alive) == (600, None)


def test_pinned_by_keep_alive_is_never_evicted_and_survives_a_sync():
    s = state(model("a", READY, gb(5), last_used=0), model("b", STOPPED, gb(5)))
    s, _ = step(s, KeepAlive("a", -1, 1.0))
    listed = {n: (replace(m.kept_from or m.policy), m.phase, None) for n, m in s.models.items()}
    s, _ = step(s, Sync(listed, {"gpu0": gb(8)}, {}, 2.0))
    assert s.models["a"].policy.pinned and not s.models["a"].kept_from.pinned
    s, actions = step(s, Arrive(1, "b", 3.0))
    assert [type(a) for a in actions] == [Reject] and actions[0].status == 503  # a is pinned: b can never fit


@pytest.mark.parametrize("m, stops", [
    (model("a", READY), True),
    (model("a", READY, pinned=True), True),  # an explicit unload stops a pinned model too
    (model("a", READY, in_flight=1), False),  # busy: left alone (the API answers 409)
    (model("a", READY, in_flight=1, waiting=[2]), False),
    (model("a", STARTING), False),
    (model("a", STOPPED), False),
], ids=["idle", "pinned", "in-flight", "queued", "starting", "stopped"])
def test_unload(m, stops):
    s, actions = step(state(m), Unload("a", 1.0))
    assert actions == ([Stop("a", "unloaded on request", StopKind.UNLOAD)] if stops else [])
    assert s.models["a"].phase is (STOPPING if stops else m.phase)


def test_keep_alive_given_while_the_model_stops_is_for_the_run_its_request_starts():
    # The request arrives while the last run is stopping; its keep_alive must not end with that run.
    s = state(model("a", READY, ttl=0))
    s, _ = step(s, Unload("a", 1.0))
    s, _ = trace(s, Arrive(1, "a", 2.0), KeepAlive("a", 2, 2.0))
    s, actions = step(s, Stopped("a", 3.0))
    assert actions == [Start("a")]
    assert (s.models["a"].keep_alive, s.models["a"].policy.ttl_s) == (2, 2)


# ---- when the driver must tick -----------------------------------------------------------------

@pytest.mark.parametrize("models, due", [
    ((), float("inf")),  # nothing declared
    ((model("a", READY), model("b", STOPPED)), float("inf")),  # idle, no ttl: only an event changes anything
    ((model("a", READY, ttl=60, last_used=10.0),), 70.0),  # the ttl expiry
    ((model("a", READY, ttl=60, last_used=10.0), model("b", READY, ttl=5, last_used=30.0)), 35.0),  # the first one
    ((model("a", READY, ttl=60, last_used=10.0, pinned=True),), float("inf")),  # pinned: no expiry
    ((model("a", READY, ttl=60, last_used=10.0, in_flight=1),), float("inf")),  # busy: its Finish restarts the clock
    ((model("a", READY, ttl=60, last_used=10.0), model("b", STOPPED, waiting=(1,))), 40.0 + TICK_S),  # a waiter
    ((model("a", STARTING),), 40.0 + TICK_S),
    ((model("a", STOPPING),), 40.0 + TICK_S),
    ((model("a", RELEASING),), 40.0 + TICK_S),
], ids=["empty", "idle", "ttl", "first-ttl", "pinned", "busy", "waiter", "starting", "stopping", "releasing"])
def test_next_tick(models, due):
    assert next_tick(state(*models), last_tick=40.0) == due


def test_a_ttl_expiry_found_by_next_tick_is_the_tick_that_stops_it():
    s = state(model("a", READY, ttl=60, last_used=10.0))
    due = next_tick(s, 0.0)
    assert step(s, Tick(due - 0.001))[1] == []
    assert step(s, Tick(due))[1] == [Stop("a", "idle for 60 s", StopKind.IDLE)]
