"""`make swarm-join`'s pure part (scripts/swarm_join.py, ``plan``): the join command it runs, the
memory label it gives the node, and what it refuses (a bad token or address, an engine already in
a swarm or in between), each with what to do."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("swarm_join", Path(__file__).parents[2] / "scripts" / "swarm_join.py")
join = importlib.util.module_from_spec(_spec)
sys.modules["swarm_join"] = join  # its dataclasses look their module up
_spec.loader.exec_module(join)

TOKEN = "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx"
GIB = 2**30


def test_a_worker_joins_the_manager_on_the_swarm_port_with_three_quarters_of_its_memory():
    steps = join.plan(TOKEN, "192.168.1.10", "inactive", 16 * GIB)
    assert steps.join == ("docker", "swarm", "join", "--token", TOKEN, "192.168.1.10:2377")
    assert steps.memory_mb == 12288
    assert steps.label("box2") == ("docker", "node", "update", "--label-add", "llamadock.memory_mb=12288", "box2")


@pytest.mark.parametrize("manager, address", [
    ("box1:2400", "box1:2400"), (" box1.lan ", "box1.lan:2377"), ("[fd00::1]", "[fd00::1]:2377"),
    ("[fd00::1]:2400", "[fd00::1]:2400")])
def test_the_managers_address_forms(manager, address):
    assert join.plan(TOKEN, manager, "inactive", GIB).join[-1] == address


def test_the_budget_and_the_advertised_address_when_set():
    steps = join.plan(f" {TOKEN}\n", "box1", "inactive", 16 * GIB, memory_setting="9000", advertise_addr="10.0.0.2")
    assert steps.memory_mb == 9000
    assert steps.join == ("docker", "swarm", "join", "--token", TOKEN, "--advertise-addr", "10.0.0.2", "box1:2377")


@pytest.mark.parametrize("token, manager, state, setting, words", [
    ("", "box1", "inactive", None, "TOKEN is empty"),
    ("SWMTKN-1-short", "box1", "inactive", None, "not a swarm join token"),
    ("docker swarm join --token " + TOKEN, "box1", "inactive", None, "not a swarm join token"),
    (TOKEN, "", "inactive", None, "MANAGER is empty"),
    (TOKEN, "box1:http", "inactive", None, "port must be a number"),
    (TOKEN, "box1:70000", "inactive", None, "port must be a number"),
    (TOKEN, "http://box1", "inactive", None, "not a host name"),
    (TOKEN, "[fd00::1", "inactive", None, "IPv6"),
    (TOKEN, "box1", "active", None, "in a swarm already"),
    (TOKEN, "box1", "pending", None, "'pending'"),
    (TOKEN, "box1", "inactive", "12G", "whole number of MiB"),
    (TOKEN, "box1", "inactive", "0", "whole number of MiB"),
])
def test_what_it_refuses_says_what_to_do(token, manager, state, setting, words):
    with pytest.raises(join.Refused) as refused:
        join.plan(token, manager, state, 16 * GIB, memory_setting=setting)
    assert words in str(refused.value)
