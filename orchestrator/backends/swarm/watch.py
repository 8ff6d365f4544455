"""Two background readers of the swarm, each on its own thread (the SDK blocks):

* the task poller: the state of every model service's current task, read every ``POLL_S``; a
  difference is a change for the manager. Swarm reports task changes on remote nodes as no
  event on the manager, so polling is what sees a task die on another box.
* the log copier: each model service's output (``docker service logs``, from whichever node runs
  its task) is copied, one ``model@node | line`` at a time, to this service's stdout, so
  ``docker compose logs -f`` on the manager shows every model too.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable, Mapping

import docker
import docker.errors

from ..runtime import Change

log = logging.getLogger("llamadock.orchestrator")

POLL_S = 1.0  # how stale a crash on another node may be seen; one small API call per poll

# One service as the poller compares it: (what identifies its current state, whether it runs).
Seen = tuple[str, bool]


def changes(before: Mapping[str, Seen], after: Mapping[str, Seen]) -> list[Change]:
    """What differs between two reads; ``down`` where a service ran and does not now (or went)."""
    found = []
    for service_id in sorted(set(before) | set(after)):
        old, new = before.get(service_id), after.get(service_id)
        if old == new:
            continue
        down = old is not None and old[1] and (new is None or not new[1])
        found.append(Change(service_id, down=down))
    return found


class TaskPoller:
    def __init__(self, read: Callable[[], dict[str, Seen]], on_change: Callable[[Change], None],
                 every: float = POLL_S) -> None:
        self.read = read
        self.on_change = on_change
        self.every = every
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="swarm-tasks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        seen: dict[str, Seen] | None = None
        while not self._stopped.wait(self.every):
            try:
                now = self.read()
            except Exception as exc:  # the manager's engine restarted, or is busy: read again
                if seen is not None:
                    log.warning("swarm: cannot read the model services (%s); trying again", exc)
                seen = None
                continue
            if seen is None:
                self.on_change(Change())  # (re)connected: what happened meanwhile was not seen
            else:
                for change in changes(seen, now):
                    self.on_change(change)
            seen = now


def split_details(line: str) -> tuple[dict[str, str], str]:
    """A ``details=True`` log line, ``k=v,k=v text``, as (its attributes, its text)."""
    head, sep, text = line.partition(" ")
    if not sep or "=" not in head:
        return {}, line
    attrs = dict(pair.partition("=")[::2] for pair in head.split(","))
    return attrs, text


class ServiceLogCopier:
    """Follows each model service's output into ours, prefixed with the model and its node."""

    def __init__(self, client: docker.DockerClient, node_name: Callable[[str], str], out=None) -> None:
        self.client = client
        self.node_name = node_name  # node id -> the name the listing shows
        self.out = out or sys.stdout
        self._following: set[str] = set()
        self._lock = threading.Lock()
        self._stopped = False

    def stop(self) -> None:
        """Copy no more. (A follower blocked on a quiet stream ends with its next line: the SDK's
        stream cannot be closed from another thread.)"""
        with self._lock:
            self._stopped = True

    def follow(self, service_id: str, model: str) -> None:
        with self._lock:
            if self._stopped or service_id in self._following:
                return
            self._following.add(service_id)
        threading.Thread(target=self._copy, args=(service_id, model), name=f"logs-{service_id[:12]}",
                         daemon=True).start()

    def _copy(self, service_id: str, model: str) -> None:
        since = int(time.time())  # from now: restarting the orchestrator repeats nothing
        try:
            pending = b""
            for chunk in self.client.api.service_logs(service_id, details=True, follow=True, stdout=True,
                                                      stderr=True, since=since):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if self._stopped:
                        return
                    self._write(model, line)
        except docker.errors.NotFound:
            pass  # removed: nothing more to copy
        except Exception as exc:
            log.warning("stopped copying logs of %s: %s", model, exc)
        finally:
            with self._lock:
                self._following.discard(service_id)

    def _write(self, model: str, line: bytes) -> None:
        attrs, text = split_details(line.decode("utf-8", "replace").rstrip("\r"))
        node = self.node_name(attrs.get("com.docker.swarm.node.id", ""))
        with self._lock:
            self.out.write(f"{model}@{node} | {text}\n")
            self.out.flush()
