"""Clients people point at a local endpoint, installed from PyPI, each streaming a chat through the
real gateway to a real llama-server: LangChain's ChatOpenAI (langchain-openai) and the `llm` CLI
with an OpenAI-compatible model entry (extra-openai-models.yaml)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from support.gateway import GatewayProcess, write_upstreams

PROMPT = "Hello there"
# Deterministic: the same prompt to the same model gives the same text, whichever client sends it.
SAMPLING = {"temperature": 0, "seed": 7, "max_tokens": 24}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, upstreams):
    path = write_upstreams(tmp_path_factory.mktemp("clients") / "upstreams.yaml",
                           {"tiny-a": {"url": upstreams["tiny-a"].url}})
    with GatewayProcess(path) as gw:
        yield gw


def streamed_tokens(gateway) -> float:
    """The gateway's count of streamed tokens for tiny-a (a stream went through it when this grows)."""
    text = httpx.get(gateway.url + "/metrics").text
    found = re.search(r'^llamadock_streamed_tokens_total\{model="tiny-a"\} ([0-9.e+]+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def expected_text(gateway) -> str:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
    chunks = client.chat.completions.create(model="tiny-a", messages=[{"role": "user", "content": PROMPT}],
                                            stream=True, **SAMPLING)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("model", ["tiny-a", "llamacpp:tiny-a"])
def test_langchain_chat_openai_streams_through_the_gateway(gateway, model):
    from langchain_openai import ChatOpenAI

    before = streamed_tokens(gateway)
    chat = ChatOpenAI(model=model, base_url=gateway.url + "/v1", api_key="unused", max_retries=0,
                      temperature=0, seed=7, max_tokens=24)
    chunks = list(chat.stream(PROMPT))
    assert len(chunks) > 5  # token by token, not one answer
    assert "".join(chunk.content for chunk in chunks) == expected_text(gateway)
    assert streamed_tokens(gateway) > before


def test_llm_cli_streams_through_the_gateway(gateway, tmp_path):
    user_dir = tmp_path / "llm"
    user_dir.mkdir()
    (user_dir / "extra-openai-models.yaml").write_text(yaml.safe_dump([
        {"model_id": "local-tiny", "model_name": "tiny-a", "api_base": gateway.url + "/v1"}]))
    env = {**os.environ, "LLM_USER_PATH": str(user_dir), "OPENAI_API_KEY": "unused"}
    before = streamed_tokens(gateway)
    run = subprocess.run([sys.executable, "-m", "llm", "prompt", "-m", "local-tiny", "--no-log",
                          "-o", "temperature", "0", "-o", "seed", "7", "-o", "max_tokens", "24", PROMPT],
                         env=env, capture_output=True, text=True, timeout=120, cwd=Path(tmp_path))
    assert run.returncode == 0, run.stderr
    assert run.stdout.rstrip("\n") == expected_text(gateway).rstrip("\n")
    assert streamed_tokens(gateway) > before  # llm streams by default: it went through as a stream
