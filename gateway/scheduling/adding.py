"""Whether a model being added can run now, and what must stop for it: a pure decision over the
scheduler's state, made before the orchestrator writes or starts anything.

An add is judged as a request for a stopped model would be (gateway/scheduling/scheduler.py: the
same room arithmetic, the same victims): idle models, least recently used first, never pinned
or busy ones (one within its residency goes once that ends: the load waits for it); a swap
group's idle rivals go; a pinned or busy rival, or busy models holding the room, mean it cannot
run now. The add then goes through the
scheduler itself (a load), which makes that room; this only says up front whether it can, so a
model that does not fit is refused before anything is changed, naming its need, the free
memory and what holds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from common.sizes import format_size

from .placement import explain
from .scheduler import (HOLDS_MEMORY, Model, Phase, Policy, State, _evictable, _fit, _loaded, _pools_of, _room,
                        _victims)


@dataclass(frozen=True)
class Fits:
    stops: tuple[str, ...] = ()  # the models the scheduler will stop for it, in that order


@dataclass(frozen=True)
class DoesNotFit:
    message: str  # need, free memory, what holds it
    need: dict[str, int]  # bytes per pool (on one GPU for a model placed on GPUs)
    free: dict[str, int]  # bytes per pool now
    held_by: tuple[str, ...]  # the models holding memory in those pools


def plan_add(state: State, name: str, policy: Policy, now: float) -> Fits | DoesNotFit:
    """``name`` with ``policy`` added to ``state`` (replacing a model of that name: its instance
    is replaced, so its memory counts as free)."""
    model = Model(name, policy)
    # A model within its residency is not stopped at once, but it will be once that ends: the
    # add's load waits for it (the residency keeps two apps from thrashing, not an admin out).
    state = replace(state, models={n: replace(m, ready_since=-math.inf) for n, m in state.models.items()})
    state = state.with_model(model)
    ever = _room(state, model, lambda m: m.policy.pinned)
    if _fit(policy, ever) is None:
        return _refusal(state, model, "even with every unpinned model stopped")
    stops: list[Model] = []
    group = policy.swap_group
    if group:
        rivals = [m for m in state.models.values() if m.name != name and m.policy.swap_group == group
                  and m.phase in HOLDS_MEMORY]
        stuck = [m for m in rivals if not _evictable(m, now, starving=False)]
        if stuck:
            what = ", ".join(f"'{m.name}' ({_why_kept(m)})" for m in stuck)
            return _refusal(state, model, f"its swap group '{group}' runs {what}, which may not be stopped now")
        stops = rivals
        for rival in rivals:  # gone, as far as room goes
            state = state.with_model(replace(rival, phase=Phase.STOPPED, placement=None))
    if _fit(policy, _room(state, model, lambda m: True)) is not None:
        return Fits(tuple(m.name for m in stops))
    victims = _victims(state, model, policy, now, starving=False)
    if victims is None:
        return _refusal(state, model, "now: the rest is held by busy or pinned models")
    return Fits(tuple(m.name for m in [*stops, *victims]))


def _why_kept(model: Model) -> str:
    if model.policy.pinned:
        return "pinned"
    if model.phase is not Phase.READY:
        return model.phase.value
    return "busy"


def _refusal(state: State, model: Model, when: str) -> DoesNotFit:
    room = _room(state, model, lambda m: True)
    pools = sorted(_pools_of(model) & set(room)) or sorted(room)
    policy = model.policy
    if policy.demand is not None:
        need = {p: policy.demand.on_one(p) for p in pools}
        told = explain(policy.demand, room)
    else:
        need = {p: n for p, n in policy.need.items() if p in room}
        told = "it needs " + ", ".join(f"{format_size(n)} in {p}" for p, n in need.items())
    free = {p: max(0, room[p]) for p in pools}
    held = tuple(m.name for m in state.models.values() if m.phase in HOLDS_MEMORY and m.name != model.name
                 and any(m.held.get(p) for p in pools))
    text = (f"Model '{model.name}' does not fit {when}: {told}; free: "
            + (", ".join(f"{p} {format_size(b)}" for p, b in free.items()) or "unknown")
            + f". Held by: {_loaded(state, pools)}.")
    return DoesNotFit(text, need, free, held)
