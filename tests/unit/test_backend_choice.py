"""Which runtime backend runs: LLAMADOCK_BACKEND (engine by default), LLAMADOCK_RUNTIME still read."""

from __future__ import annotations

import pytest

from orchestrator.backends import RUNTIMES, make_runtime
from orchestrator.settings import OrchestratorSettings


@pytest.mark.parametrize("env, expected", [
    ({}, "engine"),
    ({"LLAMADOCK_BACKEND": "swarm"}, "swarm"),
    ({"LLAMADOCK_RUNTIME": "docker"}, "docker"),  # the seam's first name
    ({"LLAMADOCK_BACKEND": "swarm", "LLAMADOCK_RUNTIME": "engine"}, "swarm"),  # the documented name wins
    ({"LLAMADOCK_BACKEND": ""}, "engine"),  # compose's `${VAR:-}`
])
def test_the_backend_setting(monkeypatch, env, expected):
    for name in ("LLAMADOCK_BACKEND", "LLAMADOCK_RUNTIME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert OrchestratorSettings().runtime == expected


def test_engine_and_its_first_name_are_one_backend():
    assert RUNTIMES["engine"] == RUNTIMES["docker"] != RUNTIMES["swarm"]


def test_an_unknown_backend_names_the_known_ones():
    with pytest.raises(RuntimeError, match="LLAMADOCK_BACKEND.*known: docker, engine, swarm"):
        make_runtime(OrchestratorSettings(runtime="kubernetes"))
