"""An add's plan (gateway/scheduling/adding.py): whether a model being added can run now and
what the scheduler will stop for it, as a table; and, over random states, that the plan says
exactly what the scheduler then does when the add loads the model."""

from __future__ import annotations

import random

import pytest

from gateway.scheduling.adding import DoesNotFit, Fits, plan_add
from gateway.scheduling.placement import Demand
from gateway.scheduling.scheduler import Arrive, Model, Phase, Policy, Start, State, Stop, Stopped, Tick, step

MiB = 2**20
READY, STOPPED, STARTING = Phase.READY, Phase.STOPPED, Phase.STARTING


def m(name, need_mib, phase=READY, *, last_used=0.0, pinned=False, busy=False, group=None, ready_since=0.0,
      residency=0.0) -> Model:
    return Model(name, Policy(need={"budget": need_mib * MiB}, pinned=pinned, swap_group=group,
                              min_residency_s=residency),
                 phase, in_flight=1 if busy else 0, last_used=last_used, ready_since=ready_since)


def budget(*models: Model, mib=350) -> State:
    return State(models={x.name: x for x in models}, capacity={"budget": mib * MiB})


def new(need_mib, group=None) -> Policy:
    return Policy(need={"budget": need_mib * MiB}, swap_group=group)


FITS = [
    # (what runs, the new model's need and group, the stops, in order)
    ("room to spare", budget(m("a", 100)), new(100), ()),
    ("the least recently used idle model goes", budget(m("a", 150, last_used=5), m("b", 150, last_used=2)), new(100),
     ("b",)),
    ("only as many as it takes", budget(m("a", 100, last_used=1), m("b", 100, last_used=2), m("c", 100, last_used=3)),
     new(200), ("a", "b")),
    ("never a busy one: the idle one goes even if used later",
     budget(m("a", 150, last_used=1, busy=True), m("b", 150, last_used=9)), new(150), ("b",)),
    ("never a pinned one", budget(m("p", 150, pinned=True), m("b", 150, last_used=9)), new(150), ("b",)),
    ("one within its residency goes once it ends (the load waits)",
     budget(m("a", 300, ready_since=99, residency=10)), new(100), ("a",)),
    ("a stopped model holds nothing", budget(m("a", 300, STOPPED)), new(300), ()),
    ("a swap-group rival goes even when there is room", budget(m("g1", 10, group="g")), new(10, "g"), ("g1",)),
    ("no memory pools: nothing to judge", State(models={"a": m("a", 100)}), new(10_000), ()),
]


@pytest.mark.parametrize("what, s, policy, stops", FITS, ids=[f[0] for f in FITS])
def test_what_is_stopped_for_an_add(what, s, policy, stops):
    assert plan_add(s, "new", policy, now=100.0) == Fits(stops)


REFUSED = [
    ("it never fits", budget(m("a", 10)), new(400), "does not fit even with every unpinned model stopped",
     ("a",)),
    ("pinned models leave too little", budget(m("p", 300, pinned=True)), new(100),
     "does not fit even with every unpinned model stopped", ("p",)),
    ("busy models hold the room", budget(m("a", 200, busy=True), m("b", 100)), new(200), "held by busy", ("a", "b")),
    ("a busy swap-group rival", budget(m("g1", 10, group="g", busy=True)), new(10, "g"),
     "swap group 'g' runs 'g1' (busy)", ("g1",)),
    ("a pinned swap-group rival", budget(m("g1", 10, group="g", pinned=True)), new(10, "g"),
     "swap group 'g' runs 'g1' (pinned)", ("g1",)),
]


@pytest.mark.parametrize("what, s, policy, words, held_by", REFUSED, ids=[r[0] for r in REFUSED])
def test_an_add_that_cannot_run_now_is_refused_naming_need_free_and_holders(what, s, policy, words, held_by):
    verdict = plan_add(s, "new", policy, now=100.0)
    assert isinstance(verdict, DoesNotFit), verdict
    assert words in verdict.message and verdict.held_by == held_by
    assert verdict.need == {"budget": policy.need["budget"]} and "budget" in verdict.free
    assert f"needs {policy.need['budget'] // MiB} MiB in budget" in verdict.message
    assert "free: budget" in verdict.message and all(f"{h} " in verdict.message for h in held_by)


def test_the_free_figure_counts_what_the_others_hold():
    verdict = plan_add(budget(m("a", 200, busy=True), m("b", 100, busy=True)), "new", new(100), now=0.0)
    assert verdict.free == {"budget": 50 * MiB} and "budget 50 MiB" in verdict.message


def test_replacing_a_model_counts_its_own_memory_as_free():
    assert plan_add(budget(m("new", 300)), "new", new(300), now=0.0) == Fits(())


def test_on_gpus_the_refusal_names_the_need_on_one_gpu():
    demand = Demand(layered=6 * 2**30, per_gpu={"gpu0": 2**30}, pools=("gpu0",))
    s = State(models={"a": Model("a", Policy(need={"gpu0": 2 * 2**30}, pinned=True), READY)},
              capacity={"gpu0": 8 * 2**30}, gpu_pools=frozenset({"gpu0"}))
    verdict = plan_add(s, "new", Policy(demand=demand), now=0.0)
    assert isinstance(verdict, DoesNotFit) and "it needs 7.0 GiB on one GPU" in verdict.message, verdict
    assert verdict.need == {"gpu0": 7 * 2**30}


# ---- the plan is what the scheduler does ------------------------------------------------------------

def random_state(rng: random.Random) -> State:
    models = []
    for i in range(rng.randint(0, 5)):
        phase = rng.choice([READY, READY, READY, STOPPED])
        models.append(m(f"m{i}", rng.choice([50, 100, 150, 200]), phase, last_used=rng.uniform(0, 50),
                        pinned=rng.random() < 0.2, busy=phase is READY and rng.random() < 0.3,
                        group=rng.choice([None, None, "g"]), ready_since=rng.uniform(0, 99),
                        residency=rng.choice([0.0, 0.0, 10.0])))
    return budget(*models, mib=rng.choice([300, 350, 500]))


@pytest.mark.parametrize("seed", range(300))
def test_a_plan_that_fits_is_what_the_scheduler_does(seed):
    rng = random.Random(seed)
    s = random_state(rng)
    policy = new(rng.choice([50, 100, 200, 300]), rng.choice([None, "g"]))
    verdict = plan_add(s, "new", policy, now=100.0)
    # The scheduler's own Sync keeps the busy counts and residencies it knew: start from the same.
    s = State(models={**s.models, "new": Model("new", policy)}, capacity=s.capacity)
    s, actions = step(s, Arrive(1, "new", 100.0))
    s, later = step(s, Tick(111.0))  # every residency (10 s) over
    actions += later
    stopped, started = [], False
    while True:  # each stop done as the lifecycle reports it, until the model starts or nothing moves
        started = started or any(isinstance(a, Start) and a.model == "new" for a in actions)
        stops = [a for a in actions if isinstance(a, Stop)]
        assert all(a.for_model == "new" for a in stops), actions
        if started or not stops:
            break
        stopped += [a.model for a in stops]
        more = []
        for stop in stops:
            s, out = step(s, Stopped(stop.model, 100.0))
            more += out
        actions = more
    if isinstance(verdict, Fits):
        assert sorted(stopped) == sorted(verdict.stops) and started, (verdict, stopped, s.models["new"])
    else:
        assert not started and not [x for x in stopped if x in verdict.held_by and s.models[x].busy]
