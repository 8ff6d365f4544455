"""What to do with a model's instance (its container): a pure decision over what is wanted and what
the runtime shows (its neutral ``Instance``, whatever backend runs it).

add, start, restart and reconcile all ask one question (is the container there current, and what
must happen to it?) and carry out the answer in manager.py. The rules, in order:

- Nothing declares the model (no ``Wanted``): its container is removed; without one, nothing to do.
- No container: one is created when the model must run now; otherwise nothing (it starts on demand).
- restart: the container there is restarted in place, whatever spec it was made from: the user
  asked to restart that server, not to update it.
- A container is *current* when its spec-hash label is the hash of the create kwargs the caller
  would use now, and the caller reuses containers at all (``Reuse``); any other one is *outdated*.
- An outdated container that runs is recreated, even when the model need not run now: a running
  server must not keep serving a stale spec. An outdated stopped one is recreated when the model
  must run now; otherwise it is removed, since the next start would have to replace it anyway.
- A current container that runs is kept ("restarting" counts as running: Docker's restart policy
  brings it back by itself). Whoever needs it to answer waits for it.
- A current stopped container (stopped, created, or exited after a crash) is started when the model
  must run now, unless the caller reuses only running containers (add hands over a new one) or
  wants it on other GPUs than its placement label says (it is recreated there). When the model need
  not run now, it is left as it is: a quick start for the first request.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .backends.runtime import LIVE, Instance


class Decision(Enum):
    NOTHING = "nothing"  # no container is needed now, and what is there (none, or a current stopped one) may stay
    KEEP = "keep"  # a current container runs: leave it (the caller waits for it to answer, if it waits)
    START = "start"  # start the current stopped container again
    RESTART = "restart"  # restart the container in place
    CREATE = "create"  # there is none: create and start one
    RECREATE = "recreate"  # remove the container there, create and start a new one
    REMOVE = "remove"  # remove the container, create none


class Reuse(Enum):
    """Which current container a caller may keep instead of creating a new one."""

    CURRENT = "current"  # kept if it runs, started if it is stopped (start, reconcile)
    RUNNING = "running"  # kept only if it runs; a stopped one is replaced (add of the spec the catalog holds)
    NONE = "none"  # none: every container is replaced (add of a spec the catalog does not hold yet)


@dataclass(frozen=True)
class Wanted:
    """What the caller wants of a declared model's container."""

    spec_hash: str | None  # of the create kwargs the caller would use; None: no spec to judge by (restart)
    run_now: bool = True  # it must run when the operation ends; False: it may start on its first request
    placement: str | None = None  # the placement label a stopped container must carry to be started; None: any
    reuse: Reuse = Reuse.CURRENT
    restart: bool = False  # restart whatever container is there, in place


def plan(wanted: Wanted | None, observed: Instance | None, placed: str | None = None) -> Decision:
    """The decision for a model's container. ``placed``: the observed container's placement label,
    needed only when ``needs_placement`` says so (without it, a placed start recreates the container)."""
    if wanted is None:
        return Decision.NOTHING if observed is None else Decision.REMOVE
    if observed is None:
        return Decision.CREATE if wanted.run_now else Decision.NOTHING
    if wanted.restart:
        return Decision.RESTART
    running = observed.state in LIVE  # a restarting one comes back by itself: it counts as running
    if wanted.reuse is Reuse.NONE or observed.spec_hash != wanted.spec_hash:
        return Decision.RECREATE if running or wanted.run_now else Decision.REMOVE
    if running:
        return Decision.KEEP  # wherever it was placed: moving a running server is the scheduler's call
    if not wanted.run_now:
        return Decision.NOTHING
    if wanted.reuse is Reuse.RUNNING:
        return Decision.RECREATE
    if wanted.placement is not None and placed != wanted.placement:
        return Decision.RECREATE  # placed on other GPUs: the placement is fixed when the container is created
    return Decision.START


def needs_placement(wanted: Wanted | None, observed: Instance | None) -> bool:
    """Whether ``plan`` needs the observed container's placement label: only to start a stopped
    container on the GPUs asked for (any other decision ignores the label)."""
    return (wanted is not None and wanted.placement is not None
            and plan(wanted, observed, placed=wanted.placement) is Decision.START)
