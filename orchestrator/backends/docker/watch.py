"""Two background readers of the Docker daemon, each on its own thread (the SDK blocks):

* the event watcher: any container event of this stack tells the manager to refresh,
  so the gateway hears of a crash or a start within a refresh, not a poll interval (and
  a reconnection, after the daemon restarted, does too: events meanwhile were missed);
* the log copier: each model container's output is copied, one ``model | line`` at a
  time, to this service's stdout, so ``docker compose logs -f`` shows every model too
  (compose only shows containers it created itself; see the README): by default its load and
  then only what reports trouble (model_logs.py), not the lines of every request.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Callable

import docker
import docker.errors

from ..runtime import Change
from .containers import LABEL_MODEL, LABEL_PROJECT
from .model_logs import ModelLogFilter, ModelLogs
from .status import docker_time

log = logging.getLogger("llamadock.orchestrator")


class EventWatcher:
    def __init__(self, client: docker.DockerClient, project: str, on_event: Callable[[dict], None],
                 on_connect: Callable[[], None] | None = None) -> None:
        self.client = client
        self.project = project
        self.on_event = on_event
        self.on_connect = on_connect  # each (re)connection: what happened while away was not seen
        self._stream = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._stream is not None:
            self._stream.close()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._stream = self.client.events(
                    decode=True, filters={"type": "container", "label": f"{LABEL_PROJECT}={self.project}"})
                if self.on_connect is not None:
                    self.on_connect()
                for event in self._stream:
                    self.on_event(event)
            except Exception as exc:  # the daemon restarted, or the stream broke: reconnect
                if not self._stopped.is_set():
                    log.warning("docker event stream ended (%s); reconnecting", exc)
            self._stopped.wait(1.0)


# Events after which a container's server is gone, or about to be: its readiness must be seen again.
DOWN_ACTIONS = ("die", "stop", "kill", "restart", "destroy")


def change_of(event: dict) -> Change | None:
    """The change a container event reports; None for one that changes no state."""
    action = event.get("Action") or event.get("status") or ""
    if action.startswith("exec_"):
        return None  # each healthcheck run is an exec: every 5 s per model, and no change of state
    return Change(instance_id=event.get("id") or event.get("Actor", {}).get("ID", ""), down=action in DOWN_ACTIONS)


def is_start(event: dict) -> bool:
    return (event.get("Action") or event.get("status")) == "start"


def _started_epoch(attrs: dict) -> float | None:
    started = docker_time((attrs.get("State") or {}).get("StartedAt"))
    return None if started is None else started.timestamp() - 0.001  # a hair early: lose no first line


class LogCopier:
    """Follows each model container's output into ours, prefixed with the model's name."""

    def __init__(self, client: docker.DockerClient, out=None, mode: ModelLogs = "events",
                 as_json: bool = False) -> None:
        self.client = client
        self.out = out or sys.stdout
        self.mode = mode
        self.as_json = as_json  # LLAMADOCK_LOG_FORMAT=json: one object a line, as the service's own lines
        self._following: set[str] = set()
        self._lock = threading.Lock()

    def follow(self, container_id: str, since_now: bool = True) -> None:
        with self._lock:
            if container_id in self._following:
                return
            self._following.add(container_id)
        threading.Thread(target=self._copy, args=(container_id, since_now), name=f"logs-{container_id[:12]}",
                         daemon=True).start()

    def _copy(self, container_id: str, since_now: bool) -> None:
        try:
            container = self.client.containers.get(container_id)
            model = container.labels.get(LABEL_MODEL, container.name)
            # Just started: from its start, so the first lines are not lost (a restarted
            # container's log also holds its earlier runs). Already running when we
            # came up: from now, so restarting the orchestrator repeats nothing.
            since = time.time() if since_now else _started_epoch(container.attrs) or time.time()
            kwargs = {"since": since}
            kept = ModelLogFilter(self.mode)
            if since_now:
                kept.loading = False  # already serving when we came up: its load is over
            pending = b""
            for chunk in container.logs(stream=True, follow=True, **kwargs):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._write(model, line, kept)
            if pending:
                self._write(model, pending, kept)
        except docker.errors.NotFound:
            pass
        except Exception as exc:
            log.warning("stopped copying logs of %s: %s", container_id[:12], exc)
        finally:
            with self._lock:
                self._following.discard(container_id)

    def _write(self, model: str, line: bytes, kept: ModelLogFilter) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        if not kept.keep(text):
            return
        out = model_line(model, text, self.as_json)
        with self._lock:
            self.out.write(out)
            self.out.flush()


def model_line(model: str, text: str, as_json: bool) -> str:
    """One copied line: ``model | text``, or a JSON object beside the service's own JSON lines."""
    if as_json:
        return json.dumps({"time": datetime.now(timezone.utc).isoformat(), "level": "INFO",
                           "logger": "llamadock.model", "model": model, "message": text}, ensure_ascii=False) + "\n"
    return f"{model} | {text}\n"
