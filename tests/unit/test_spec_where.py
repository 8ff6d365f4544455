"""A spec naming a node or GPUs that do not exist is refused (400) naming the ones that do; on a
swarm, the spec's node pins its service there, and is part of what the service is made from."""

from __future__ import annotations

import pytest

from common.errors import ApiError
from contract.pools import Pool, PoolId
from contract.spec import ModelSpec
from orchestrator.backends.docker.containers import StackFacts, spec_hash
from orchestrator.backends.pools import check_where
from orchestrator.backends.swarm.services import SwarmFacts, service_kwargs

SWARM_NODES = ["box1", "box2", "box3", "local"]  # the manager (box1) goes by both names
GPUS = [Pool(id=PoolId(gpu=0)), Pool(id=PoolId(gpu=1)), Pool(id=PoolId(node="box2", gpu=0)),
        Pool(id=PoolId(node="box3"))]


def spec(**fields) -> ModelSpec:
    return ModelSpec(name="q", model="q.gguf", **fields)


@pytest.mark.parametrize("fields", [{}, {"node": "box2"}, {"node": "local", "gpus": (0, 1)}, {"gpus": (1,)},
                                    {"node": "box3", "gpus": (0,)},  # box3's GPUs are not known: not judged
                                    {"node": "box2", "gpus": (0,)}])
def test_what_exists_is_accepted(fields):
    check_where(spec(**fields), GPUS, SWARM_NODES)


@pytest.mark.parametrize("fields, param, words", [
    ({"node": "box9"}, "node", "No node 'box9' in this swarm; its nodes: box1, box2, box3, local."),
    ({"gpus": (2,)}, "gpus", "No GPUs [2] on any one node; the GPUs there: box2: 0; local: 0, 1."),
    ({"node": "box2", "gpus": (1,)}, "gpus", "No GPUs [1] on box2; the GPUs there: box2: 0."),
])
def test_a_node_or_gpu_that_does_not_exist_is_a_400_naming_what_does(fields, param, words):
    with pytest.raises(ApiError) as refused:
        check_where(spec(**fields), GPUS, SWARM_NODES)
    assert (refused.value.status, refused.value.param, refused.value.message) == (400, param, words)


def test_one_box_has_only_its_local_node():
    check_where(spec(node="local"), [], ["local"])
    with pytest.raises(ApiError, match="No node 'box2' in this box \\(the engine backend\\); its nodes: local"):
        check_where(spec(node="box2"), [], ["local"])


def test_on_a_swarm_the_specs_node_pins_the_service_and_changes_it():
    facts = SwarmFacts(gpu=False, local_hostname="box1")
    stack = StackFacts(project="p", network="llamadock", models_dir="/m", cache_dir="/m/.cache",
                       cpu_image="llama:cpu", gpu_image="llama:cuda")
    anywhere, there, here = (service_kwargs(s, facts, stack) for s in (spec(), spec(node="box2"), spec(node="local")))
    assert anywhere["constraints"] == [] and there["constraints"] == ["node.hostname==box2"]
    assert here["constraints"] == ["node.hostname==box1"]
    assert len({spec_hash(anywhere), spec_hash(there), spec_hash(here)}) == 3
