"""Conversations kept across unloads on the real stack: a model stopped by its ttl, or unloaded by
an admin, has its slot saved into its own KV cache directory (the orchestrator mounts it, the
gateway checks and indexes it); started again by the next turn of the conversation, it is
restored first, and the model's server reuses the history (its own ``timings.cache_n``, passed
through the gateway untouched). After a spec change the old file is never restored."""

from __future__ import annotations

import random
import re

import httpx
import pytest
import yaml

from contract.status import GatewayStatus
from support.stack import Stack, require_docker, running_stack
from support.waiting import wait_until

require_docker()
pytestmark = pytest.mark.docker

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex every box".split()
# About 3,000 tokens: re-processing them takes clearly longer than a restore's fixed costs (the
# save's own time stands in for the first restore's), also on a loaded 2-core machine, so the
# gateway's "restore only when faster" judges the restore worth it.
HISTORY = [{"role": "user", "content": " ".join(random.Random(5).choice(WORDS) for _ in range(2800))}]
MODELS = {
    "brief": {"model": "m.gguf", "ctx_size": 4096, "parallel": 1, "ttl": 2},
    "kept": {"model": "m.gguf", "ctx_size": 4096, "parallel": 1},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_models):
    with running_stack(tmp_path_factory.mktemp("kv"), tiny_models["tiny-a"], as_file="m.gguf", catalog=MODELS,
                       env={"LLAMADOCK_LOG_LEVEL": "info"}) as stack:
        yield stack


def chat(stack: Stack, model: str, messages: list[dict]) -> dict:
    response = httpx.post(stack.url + "/v1/chat/completions", timeout=180,
                          json={"model": model, "messages": messages, "max_tokens": 8, "temperature": 0})
    response.raise_for_status()
    return response.json()


def next_turn(answer: dict, question: str) -> list[dict]:
    return HISTORY + [{"role": "assistant", "content": answer["choices"][0]["message"]["content"]},
                      {"role": "user", "content": question}]


def scheduled(stack: Stack, model: str):
    return GatewayStatus.model_validate_json(httpx.get(stack.url + "/status").content).scheduler.models[model]


def counter(stack: Stack, name: str, **labels: str) -> float:
    text = httpx.get(stack.url + "/metrics", timeout=10).text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search(rf"^{name}\{{{wanted}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def saved_files(stack: Stack, model: str) -> list[str]:
    directory = stack.models / ".cache" / "kv" / model
    return sorted(p.name for p in directory.glob("*.bin")) if directory.exists() else []


def test_a_model_stopped_by_its_ttl_comes_back_with_its_conversation(stack):
    first = chat(stack, "brief", HISTORY)
    history_tokens = first["timings"]["prompt_n"]
    # Idle for its ttl: stopped by the scheduler, saved first.
    wait_until(lambda: scheduled(stack, "brief").phase == "stopped", 60, "brief stopped by its ttl")
    view = scheduled(stack, "brief")
    assert view.kv_saved == 1 and view.kv_saved_bytes > 0, view
    assert len(saved_files(stack, "brief")) == 1
    assert counter(stack, "llamadock_kv_cache_saves_total", model="brief") == 1

    # The next turn starts it again: the conversation is restored before the request reaches it.
    again = chat(stack, "brief", next_turn(first, "and then?"))
    assert again["timings"]["cache_n"] >= history_tokens, again["timings"]
    assert again["timings"]["prompt_n"] < 100, again["timings"]
    assert counter(stack, "llamadock_kv_cache_lookups_total", model="brief", result="restored") == 1
    logs = stack.compose("logs", "gateway").stdout
    assert "brief chat/completions: served from a restored KV cache" in logs


def test_an_unloaded_model_comes_back_with_its_conversation_and_a_spec_change_forgets_it(stack):
    first = chat(stack, "kept", HISTORY)
    stack.admin.post("/admin/models/kept/unload").raise_for_status()
    assert scheduled(stack, "kept").kv_saved == 1
    again = chat(stack, "kept", next_turn(first, "what next?"))
    assert again["timings"]["cache_n"] >= first["timings"]["prompt_n"], again["timings"]

    # Saved again at the next unload (the longer conversation replaces the one it continues).
    stack.admin.post("/admin/models/kept/unload").raise_for_status()
    assert len(saved_files(stack, "kept")) == 1

    # Another context size: another key. The old file is never restored into the new server.
    catalog = yaml.safe_load((stack.config / "models.yaml").read_text())
    catalog["models"]["kept"]["ctx_size"] = 8192
    (stack.config / "models.yaml").write_text(yaml.safe_dump(catalog))
    stack.admin.post("/admin/reconcile").raise_for_status()
    wait_until(lambda: scheduled(stack, "kept").kv_saved == 0, 30, "the new spec's key in the listing")
    fresh = chat(stack, "kept", next_turn(first, "what next?"))
    assert fresh["timings"]["cache_n"] == 0, fresh["timings"]
