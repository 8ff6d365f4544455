"""Restarting the Docker daemon from a test, the way scripts/setup-docker.sh runs it
(no systemd here: dockerd is started by hand), and the exclusive lock that keeps
other Docker tests (run under the shared lock) from seeing it go away."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .stack import REPO
from .waiting import wait_until

if TYPE_CHECKING:
    from .faults import Outcome

LOCK_FILE = Path("/tmp/llamadock-docker.lock")
PID_FILE = Path("/var/run/docker.pid")


def engine_up() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def start_engine() -> None:
    """Start dockerd exactly as the machine setup does (a no-op when it answers)."""
    out = subprocess.run(["bash", "scripts/setup-docker.sh"], cwd=REPO, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"scripts/setup-docker.sh could not start dockerd:\n{out.stderr[-3000:]}")


def stop_engine(timeout: float = 120) -> None:
    """SIGTERM dockerd (it stops the containers, as on a host shutdown) and wait until it is gone."""
    pid = int(PID_FILE.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not _alive(pid), timeout, f"dockerd (pid {pid}) to exit after SIGTERM", every=0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _inherited_lock_fd() -> int | None:
    """The lock file's descriptor when we run under `flock /tmp/llamadock-docker.lock ...`."""
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == str(LOCK_FILE):
                return int(fd)
    return None


@contextlib.contextmanager
def exclusive_docker_lock(timeout: float) -> Iterator[bool]:
    """Hold the Docker lock exclusively; yields False when it could not be had in time.

    Under `flock -s` (how Docker tests are run beside others) the inherited shared lock is
    upgraded, and given back as shared afterwards; under `flock -x` it is already ours.
    """
    inherited = _inherited_lock_fd()
    fd = inherited if inherited is not None else os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    deadline = time.monotonic() + timeout
    held = False
    try:
        while not held:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.5)  # polling someone else's lock: nothing to wait on instead
        yield held
    finally:
        if inherited is not None:
            # Linux drops the shared lock when an upgrade fails, too: take it back either way.
            fcntl.flock(fd, fcntl.LOCK_SH)
        else:
            os.close(fd)


@dataclass(frozen=True)
class Restart:
    """When an engine restart's steps ended (time.monotonic()) and what a request stream saw."""
    began: float
    stopped: float
    back: float  # the engine answers again
    served: "Outcome"  # the stream's first success after that
    outcomes: list


def restart_engine_under(stream, what: str, limit: float) -> Restart:
    """Stop and start dockerd while ``stream`` (support.faults.RequestStream, running) sends; wait
    until it is served again, then steadily. The stream is stopped at the end, whatever happened,
    and the engine started if it is not up."""
    try:
        wait_until(lambda: stream.successes_since(0) >= 3, 30, "the stream to be served")
        began = time.monotonic()
        try:
            stop_engine()
            stopped = time.monotonic()
        finally:
            start_engine()  # the way the machine's setup starts it, whether or not the stop went well
        back = time.monotonic()
        served = wait_until(lambda: stream.first_success_after(back), limit, what)
        wait_until(lambda: stream.successes_since(served.sent) >= 5, 30, "a steady stream again")
    finally:
        outcomes = stream.stop()
        if not engine_up():
            start_engine()
    return Restart(began, stopped, back, served, outcomes)
