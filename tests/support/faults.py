"""Tools for fault-injection tests: a steady request stream that records what every
client saw, SIGKILL of a container's main process, and a reader of a process's RSS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx


@dataclass(frozen=True)
class Outcome:
    """One request of a stream: when it was sent and answered, and what came back."""

    sent: float  # time.monotonic()
    done: float
    status: int | None  # None: no HTTP answer (see ``error``)
    error: str | None = None  # the transport error's class name: ConnectError, RemoteProtocolError, ...
    retry_after: str | None = None
    body: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def hung(self) -> bool:
        return self.error is not None and "Timeout" in self.error

    @property
    def acceptable_refusal(self) -> bool:
        """A 503 that tells the client when to come back: what a restart may answer."""
        return self.status == 503 and self.retry_after is not None and '"error"' in self.body


class RequestStream(threading.Thread):
    """Sends ``send(client)`` one after another until stopped; records every outcome.

    The pause between requests only paces the stream (it never waits for anything);
    a request that cannot connect is retried after the same pause, as a client would.
    """

    def __init__(self, send: Callable[[httpx.Client], httpx.Response], *, pause: float = 0.05,
                 timeout: httpx.Timeout = httpx.Timeout(30, connect=2)) -> None:
        super().__init__(daemon=True)
        self.send = send
        self.pause = pause
        self.timeout = timeout
        self.outcomes: list[Outcome] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        # A fresh connection per request: a pooled one to a killed server only adds noise.
        with httpx.Client(timeout=self.timeout, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not self._stop_event.is_set():
                sent = time.monotonic()
                try:
                    r = self.send(client)
                    self.outcomes.append(Outcome(sent, time.monotonic(), r.status_code,
                                                 retry_after=r.headers.get("retry-after"), body=r.text[:500]))
                except httpx.TransportError as exc:
                    self.outcomes.append(Outcome(sent, time.monotonic(), None, error=type(exc).__name__))
                self._stop_event.wait(self.pause)

    def stop(self) -> list[Outcome]:
        self._stop_event.set()
        self.join(60)
        assert not self.is_alive(), "the request stream did not end: a request hung"
        return self.outcomes

    def successes_since(self, t: float) -> int:
        return sum(1 for o in list(self.outcomes) if o.sent >= t and o.ok)

    def first_success_after(self, t: float) -> Outcome | None:
        return next((o for o in list(self.outcomes) if o.sent >= t and o.ok), None)


def summarize(outcomes: list[Outcome]) -> dict[str, int]:
    """Counts by what the client saw: '200', '503+Retry-After', 'ConnectError', '404', ..."""
    counts: dict[str, int] = {}
    for o in outcomes:
        key = o.error or (f"{o.status}+Retry-After" if o.acceptable_refusal else str(o.status))
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def unexpected(outcomes: list[Outcome]) -> list[Outcome]:
    """Answers a restart must never give: anything but 200, a 503 with Retry-After,
    or a connection error (refused or cut while the port is closed). A timeout is a hang."""
    return [o for o in outcomes if not (o.ok or o.acceptable_refusal or (o.error and not o.hung))]


def container_pid(name_or_id: str) -> int:
    out = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", name_or_id], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip())


def sigkill(name_or_id: str) -> float:
    """SIGKILL a container's main process from the host, as a crash or the OOM killer would;
    returns the monotonic time just before the signal.

    Not `docker kill`: Docker (20.10 here) counts that as a deliberate stop and does not
    apply the container's restart policy afterwards, so it is no crash."""
    pid = container_pid(name_or_id)
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    return started


_client = None


def _docker():
    global _client
    if _client is None:
        import docker

        _client = docker.from_env()
    return _client


def containers_of(project: str, model: str) -> list:
    """Our model containers for ``model`` (any state), through the API: fast enough to poll."""
    return _docker().containers.list(all=True, filters={
        "label": [f"io.llamadock.project={project}", f"io.llamadock.model={model}"]})


def restart_count(name_or_id: str) -> int:
    out = subprocess.run(["docker", "inspect", "-f", "{{.RestartCount}}", name_or_id], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip())


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (a container's main process, seen from the host)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def sse_events(text: str) -> list[tuple[str, str]]:
    """(event, data) pairs of an SSE body; ``event`` is 'message' when unnamed."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, "\n".join(data)))
    return events


def stream_text(events: list[tuple[str, str]]) -> str:
    """The generated text of an OpenAI chat stream."""
    pieces = []
    for name, data in events:
        if name == "message" and data != "[DONE]":
            for choice in json.loads(data).get("choices", []):
                pieces.append((choice.get("delta") or {}).get("content") or "")
    return "".join(pieces)
