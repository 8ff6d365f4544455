"""How one model moves to a new llama-server image (`make llama-upgrade`): a pure decision over
the scheduler's state.

- BESIDE: it runs, and its pools have room for a second copy of it: the new server loads next to
  the old one, which keeps serving; once the new one answers, the old one goes (no downtime).
- REPLACE: it runs, and there is no such room: once it is idle its requests wait (a CLOSED hold),
  the old server stops, the new one loads; if the new one fails, the old one starts again.
- LATER: it does not run: nothing to swap; its next start makes its server on the new image.
- WAIT: it is starting or stopping: asked again once that is over.
"""

from __future__ import annotations

from enum import StrEnum

from .scheduler import Phase, State, _room


class Move(StrEnum):
    BESIDE = "beside"
    REPLACE = "replace"
    LATER = "later"
    WAIT = "wait"


def how_to_move(state: State, name: str) -> Move:
    model = state.models.get(name)
    if model is None or model.phase in (Phase.STOPPED, Phase.FAILED):
        return Move.LATER
    if model.phase is not Phase.READY:
        return Move.WAIT
    room = _room(state, model, lambda m: True)  # what the others leave
    held = model.held
    # Where it runs now, its need once more on top of what it holds (a pool without a capacity is unlimited).
    twice = all(room[p] - n >= n for p, n in held.items() if p in room)
    return Move.BESIDE if twice else Move.REPLACE
