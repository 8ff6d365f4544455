"""The instance plan: for each operation's situation, the decision it carries out (orchestrator/plan.py).
Over the runtime's neutral Instance: no backend's words."""

from __future__ import annotations

import pytest

from contract.listing import InstanceState
from orchestrator.backends.runtime import Instance
from orchestrator.plan import Decision, Reuse, Wanted, needs_placement, plan

HASH, OLD = "h-now", "h-before"
HERE, ELSEWHERE = '{"gpus": [0]}', '{"gpus": [1]}'  # placement labels


def container(state: str, spec_hash: str = HASH, exit_code: int = 0, restarts: int = 0) -> Instance:
    return Instance(id="abc", name="p-model-tiny", model="tiny", state=InstanceState(state), spec_hash=spec_hash,
                    exit_code=exit_code, restart_count=restarts)


NONE = None
RUNNING = container("running")
RUNNING_OUTDATED = container("running", OLD)
STOPPED = container("exited", exit_code=143)
STOPPED_OUTDATED = container("exited", OLD, exit_code=143)
CREATED = container("created")
RESTARTING = container("restarting", exit_code=1, restarts=2)
CRASHED = container("exited", exit_code=1, restarts=3)
CRASHED_OUTDATED = container("exited", OLD, exit_code=1, restarts=3)

# The Wanted each operation builds (manager.py).
ADD_DECLARED = Wanted(HASH, reuse=Reuse.RUNNING)  # add of the spec the catalog already holds
ADD_NEW = Wanted(HASH, reuse=Reuse.NONE)  # add of a new spec, or a replace
START = Wanted(HASH)
START_PLACED = Wanted(HASH, placement=HERE)
RESTART = Wanted(None, restart=True)
RECONCILE_PRELOADED = Wanted(HASH, run_now=True)  # preload or pinned
RECONCILE_ON_DEMAND = Wanted(HASH, run_now=False)


@pytest.mark.parametrize("observed, decision", [
    (NONE, Decision.CREATE),
    (RUNNING, Decision.KEEP),  # the no-op that waits for it
    (RESTARTING, Decision.KEEP),
    (RUNNING_OUTDATED, Decision.RECREATE),
    (STOPPED, Decision.RECREATE),  # add hands over a new container, not the stopped one
    (CREATED, Decision.RECREATE),
    (CRASHED, Decision.RECREATE),
    (STOPPED_OUTDATED, Decision.RECREATE),
])
def test_add_of_the_declared_spec(observed, decision):
    assert plan(ADD_DECLARED, observed) is decision


@pytest.mark.parametrize("observed, decision", [
    (NONE, Decision.CREATE),
    (RUNNING, Decision.RECREATE),  # same container kwargs, but the catalog gets a new spec
    (RESTARTING, Decision.RECREATE),
    (RUNNING_OUTDATED, Decision.RECREATE),
    (STOPPED, Decision.RECREATE),
    (STOPPED_OUTDATED, Decision.RECREATE),
])
def test_add_of_a_new_spec_replaces_whatever_is_there(observed, decision):
    assert plan(ADD_NEW, observed) is decision


@pytest.mark.parametrize("observed, decision", [
    (NONE, Decision.CREATE),
    (RUNNING, Decision.KEEP),
    (RESTARTING, Decision.KEEP),  # Docker brings it back by itself: wait for it
    (RUNNING_OUTDATED, Decision.RECREATE),
    (STOPPED, Decision.START),
    (CREATED, Decision.START),
    (CRASHED, Decision.START),
    (STOPPED_OUTDATED, Decision.RECREATE),
    (CRASHED_OUTDATED, Decision.RECREATE),
])
def test_start(observed, decision):
    assert plan(START, observed) is decision
    assert not needs_placement(START, observed)


@pytest.mark.parametrize("observed, placed, decision", [
    (NONE, None, Decision.CREATE),
    (RUNNING, ELSEWHERE, Decision.KEEP),  # running already: left where it is
    (RESTARTING, ELSEWHERE, Decision.KEEP),
    (RUNNING_OUTDATED, HERE, Decision.RECREATE),
    (STOPPED, HERE, Decision.START),
    (STOPPED, ELSEWHERE, Decision.RECREATE),
    (STOPPED, "", Decision.RECREATE),  # created without a placement
    (STOPPED, None, Decision.RECREATE),  # not looked at: recreated where asked, to be sure
    (CRASHED, HERE, Decision.START),
    (CRASHED, ELSEWHERE, Decision.RECREATE),
    (STOPPED_OUTDATED, HERE, Decision.RECREATE),
])
def test_start_on_given_gpus(observed, placed, decision):
    assert plan(START_PLACED, observed, placed) is decision


@pytest.mark.parametrize("observed, needed", [
    (NONE, False), (RUNNING, False), (RESTARTING, False), (RUNNING_OUTDATED, False),
    (STOPPED_OUTDATED, False), (STOPPED, True), (CREATED, True), (CRASHED, True),
])
def test_the_placement_label_is_read_only_when_it_decides(observed, needed):
    assert needs_placement(START_PLACED, observed) is needed


def test_a_placement_that_matches_the_default_label_starts_the_stopped_container():
    # Without a GPU a placed start's kwargs carry an empty placement label, as the container does.
    assert plan(Wanted(HASH, placement=""), STOPPED, "") is Decision.START


@pytest.mark.parametrize("observed, decision", [
    (NONE, Decision.CREATE),  # the manager answers 404 first when nothing declares it either
    (RUNNING, Decision.RESTART),
    (RESTARTING, Decision.RESTART),
    (RUNNING_OUTDATED, Decision.RESTART),  # restarted as it is, not updated
    (STOPPED, Decision.RESTART),
    (CRASHED, Decision.RESTART),
    (STOPPED_OUTDATED, Decision.RESTART),
])
def test_restart_bounces_whatever_is_there(observed, decision):
    assert plan(RESTART, observed) is decision


@pytest.mark.parametrize("observed, preloaded, on_demand", [
    (NONE, Decision.CREATE, Decision.NOTHING),  # on demand: its first request starts it
    (RUNNING, Decision.KEEP, Decision.KEEP),
    (RESTARTING, Decision.KEEP, Decision.KEEP),
    (RUNNING_OUTDATED, Decision.RECREATE, Decision.RECREATE),  # a running server must not serve a stale spec
    (STOPPED, Decision.START, Decision.NOTHING),
    (CREATED, Decision.START, Decision.NOTHING),
    (CRASHED, Decision.START, Decision.NOTHING),
    (STOPPED_OUTDATED, Decision.RECREATE, Decision.REMOVE),  # the next start would replace it anyway
    (CRASHED_OUTDATED, Decision.RECREATE, Decision.REMOVE),
])
def test_reconcile_of_a_declared_model(observed, preloaded, on_demand):
    assert plan(RECONCILE_PRELOADED, observed) is preloaded
    assert plan(RECONCILE_ON_DEMAND, observed) is on_demand


@pytest.mark.parametrize("observed, decision", [
    (NONE, Decision.NOTHING),
    (RUNNING, Decision.REMOVE),
    (RESTARTING, Decision.REMOVE),
    (STOPPED, Decision.REMOVE),
    (CRASHED, Decision.REMOVE),
])
def test_reconcile_removes_what_nothing_declares(observed, decision):
    assert plan(None, observed) is decision
    assert not needs_placement(None, observed)


def test_the_decisions_that_need_the_model_running_now_never_leave_it_stopped():
    observed = [NONE, RUNNING, RESTARTING, RUNNING_OUTDATED, STOPPED, CREATED, CRASHED, STOPPED_OUTDATED]
    for wanted in (ADD_DECLARED, ADD_NEW, START, START_PLACED, RESTART, RECONCILE_PRELOADED):
        for view in observed:
            assert plan(wanted, view) not in (Decision.NOTHING, Decision.REMOVE), (wanted, view)
