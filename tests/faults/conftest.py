"""Fault-injection suite: what each fault did to clients, how long until the stack served
again, what was lost. Each test records one row with ``fault_report(...)``; the rows are
printed as a table at the end of the run and written to logs/faults-report.json
(or $LLAMADOCK_FAULTS_REPORT), whether or not pytest shows the tests' output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from support.daemon import exclusive_docker_lock
from support.stack import REPO

ROWS = pytest.StashKey[list]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "docker_daemon: restarts the Docker daemon itself "
                                       "(deselect with -m 'not docker_daemon')")
    config.stash[ROWS] = []


@pytest.fixture(scope="module")
def exclusive():
    """The Docker lock held exclusively, for a test that restarts the engine (the other Docker
    tests hold it shared); skipped when it cannot be had in time."""
    with exclusive_docker_lock(float(os.environ.get("LLAMADOCK_DOCKER_LOCK_WAIT_S", "240"))) as held:
        if not held:
            pytest.skip("other Docker tests hold /tmp/llamadock-docker.lock: restarting the daemon would break them")
        yield


@pytest.fixture
def fault_report(request: pytest.FixtureRequest, record_property):
    """``fault_report(fault, client_saw, recovery_s, lost, **figures)``: one row of the table."""

    def record(fault: str, client_saw: str, recovery_s: float | None, lost: str, **figures) -> None:
        row = {"fault": fault, "client_saw": client_saw,
               "recovery_s": None if recovery_s is None else round(recovery_s, 2), "lost": lost,
               "test": request.node.nodeid, **figures}
        request.config.stash[ROWS].append(row)
        record_property("fault", row)

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    rows = config.stash.get(ROWS, [])
    if not rows:
        return
    path = Path(os.environ.get("LLAMADOCK_FAULTS_REPORT") or REPO / "logs" / "faults-report.json")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=2) + "\n")
        where = f" (also in {path})"
    except OSError as exc:
        where = f" (could not write {path}: {exc})"
    terminalreporter.section("fault injection" + where)
    for row in rows:
        recovery = "-" if row["recovery_s"] is None else f"{row['recovery_s']:.2f} s"
        extra = {k: v for k, v in row.items() if k not in ("fault", "client_saw", "recovery_s", "lost", "test")}
        terminalreporter.write_line(f"{row['fault']}: client saw {row['client_saw']}; recovered in {recovery}; "
                                    f"lost: {row['lost']}" + (f"; {json.dumps(extra)}" if extra else ""))
