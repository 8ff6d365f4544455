"""An image upgrade in the scheduler: how each model moves (gateway/scheduling/upgrading.py), and
what a hold does to admission, eviction and the listing (Hold / Unhold events), as tables."""

from __future__ import annotations

import pytest

from gateway.scheduling.scheduler import (Admit, Arrive, Finish, Hold, HoldKind, Model, Phase, Policy, Start, State,
                                          Stop, Sync, Tick, Unhold, Unload, step)
from gateway.scheduling.upgrading import Move, how_to_move

MiB = 2**20
READY, STOPPED, STARTING = Phase.READY, Phase.STOPPED, Phase.STARTING


def m(name, need_mib, phase=READY, *, busy=False, ttl=0.0) -> Model:
    return Model(name, Policy(need={"budget": need_mib * MiB}, ttl_s=ttl), phase, in_flight=1 if busy else 0)


def budget(*models: Model, mib=500) -> State:
    return State(models={x.name: x for x in models}, capacity={"budget": mib * MiB})


@pytest.mark.parametrize("what, s, move", [
    ("room for a second copy", budget(m("a", 200), m("b", 100)), Move.BESIDE),
    ("exactly room for it", budget(m("a", 200), m("b", 100), mib=500), Move.BESIDE),
    ("no room for a second copy", budget(m("a", 200), m("b", 150)), Move.REPLACE),
    ("not running: its next start", budget(m("a", 200, STOPPED)), Move.LATER),
    ("starting: asked again later", budget(m("a", 200, STARTING)), Move.WAIT),
    ("no pools: unlimited", State(models={"a": m("a", 200)}), Move.BESIDE),
    ("not known", budget(), Move.LATER),
])
def test_how_each_model_moves(what, s, move):
    assert how_to_move(s, "a") == move


def test_a_model_loading_its_new_server_beside_still_serves_and_counts_twice():
    s, _ = step(budget(m("a", 200)), Hold("a", HoldKind.BESIDE, 0.0))
    assert s.models["a"].held == {"budget": 400 * MiB}
    s, actions = step(s, Arrive(1, "a", 1.0))
    assert actions == [Admit(1, "a")]


def test_a_closed_model_admits_nothing_until_unheld_then_its_queue_goes():
    s, _ = step(budget(m("a", 200)), Hold("a", HoldKind.CLOSED, 0.0))
    s, actions = step(s, Arrive(1, "a", 1.0))
    assert actions == [] and [w.rid for w in s.models["a"].queue] == [1]
    s, actions = step(s, Unhold("a", 2.0))
    assert actions == [Admit(1, "a")]


def test_a_closed_hold_drains_a_busy_model_then_its_waiters_go_once_unheld():
    s, _ = step(budget(m("a", 200, busy=True)), Hold("a", HoldKind.CLOSED, 0.0))
    s, actions = step(s, Arrive(1, "a", 0.5))
    assert s.models["a"].closed and actions == []
    s, actions = step(s, Finish(0, "a", 1.0))
    assert s.models["a"].in_flight == 0 and actions == []  # drained: the swap may begin
    s, actions = step(s, Unhold("a", 2.0))
    assert actions == [Admit(1, "a")]


def test_a_hold_on_a_model_that_is_not_ready_changes_nothing():
    s, _ = step(budget(m("a", 200, STOPPED)), Hold("a", HoldKind.CLOSED, 0.0))
    assert s.models["a"].hold is None


def test_a_held_model_is_never_stopped_for_room_ttl_or_unload():
    s = budget(m("a", 300, ttl=1.0), m("b", 300, STOPPED))
    s, _ = step(s, Hold("a", HoldKind.BESIDE, 0.0))
    s, actions = step(s, Arrive(1, "b", 5.0))
    s, more = step(s, Tick(10.0))
    s, unload = step(s, Unload("a", 11.0))
    assert not [a for a in actions + more + unload if isinstance(a, Stop)]
    s, actions = step(s, Unhold("a", 12.0))
    assert [a.model for a in actions if isinstance(a, Stop)] == ["a"]  # now it may make room for b


def test_a_listing_mid_swap_does_not_undo_a_held_ready_model():
    s, _ = step(budget(m("a", 200)), Hold("a", HoldKind.CLOSED, 0.0))
    policy = s.models["a"].policy
    s, actions = step(s, Sync({"a": (policy, STOPPED, "not running (no container)")}, s.capacity, {}, 1.0))
    assert s.models["a"].phase is READY and not [a for a in actions if isinstance(a, Start)]
