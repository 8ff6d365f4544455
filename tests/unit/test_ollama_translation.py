"""Ollama <-> OpenAI translation (gateway/api/ollama_translation.py): requests, answers, streams, keep_alive."""

from __future__ import annotations

import json

import pytest

from contract.spec import ModelSpec
from gateway.api import ollama_translation as ollama
from gateway.api.ollama_translation import Answer, OllamaRequestError, SseDecoder, parse_keep_alive


@pytest.mark.parametrize("given, seconds", [
    (None, None), (300, 300.0), (2.5, 2.5), (0, 0.0), ("0", 0.0), (-1, -1.0), ("-1", -1.0), ("-5m", -1.0),
    ("5m", 300.0), ("1h30m", 5400.0), ("10s", 10.0), ("1.5s", 1.5), ("500ms", 0.5), ("300", 300.0),
])
def test_keep_alive(given, seconds):
    assert parse_keep_alive(given) == seconds


@pytest.mark.parametrize("given", ["soon", "5x", "", "m", True, [], {"s": 1}, "1e999", float("nan")])
def test_keep_alive_refused(given):
    with pytest.raises(OllamaRequestError):
        parse_keep_alive(given)


def test_chat_request_maps_options_format_images_and_tools():
    body = {"model": "x", "messages": [{"role": "user", "content": "look", "images": ["AAAA"]},
                                       {"role": "assistant", "content": "",
                                        "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
                                       {"role": "tool", "content": "2", "tool_name": "f"}],
            "options": {"temperature": 0.2, "top_p": 0.9, "num_predict": 16, "seed": 7, "stop": ["\n"],
                        "num_ctx": 8192},
            "format": "json", "tools": [{"type": "function", "function": {"name": "f"}}]}
    out = ollama.chat_request(body, "qwen3")
    assert out["model"] == "qwen3" and out["stream"] is True  # Ollama streams by default
    assert (out["temperature"], out["top_p"], out["max_tokens"], out["seed"], out["stop"]) == (0.2, 0.9, 16, 7, ["\n"])
    assert "num_ctx" not in out and out["response_format"] == {"type": "json_object"}
    assert out["messages"][0]["content"][1] == {"type": "image_url",
                                                "image_url": {"url": "data:image/png;base64,AAAA"}}
    call = out["messages"][1]["tool_calls"][0]
    assert call["function"] == {"name": "f", "arguments": '{"a": 1}'}
    assert out["messages"][2]["name"] == "f" and out["tools"] == body["tools"]


def test_unlimited_num_predict_is_dropped_and_a_schema_format_kept():
    out = ollama.chat_request({"messages": [], "options": {"num_predict": -1}, "format": {"type": "object"},
                               "stream": False}, "m")
    assert "max_tokens" not in out and out["stream"] is False
    assert out["response_format"]["json_schema"]["schema"] == {"type": "object"}


def test_generate_uses_the_chat_template_unless_raw():
    endpoint, body = ollama.generate_request({"prompt": "hi", "system": "be brief"}, "m")
    assert endpoint == "chat/completions"
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    endpoint, body = ollama.generate_request({"prompt": "hi", "raw": True, "stream": False}, "m")
    assert (endpoint, body["prompt"], body["stream"]) == ("completions", "hi", False)


@pytest.mark.parametrize("make, body", [
    (lambda b: ollama.chat_request(b, "m"), {"messages": "hi"}),
    (lambda b: ollama.chat_request(b, "m"), {"messages": [{"content": "no role"}]}),
    (lambda b: ollama.chat_request(b, "m"), {"messages": [{"role": "user", "content": {"x": 1}}]}),
    (lambda b: ollama.chat_request(b, "m"), {"messages": [], "options": [1]}),
    (lambda b: ollama.chat_request(b, "m"), {"messages": [], "format": "yaml"}),
    (lambda b: ollama.generate_request(b, "m"), {"prompt": 3}),
    (lambda b: ollama.embed_request(b, "m"), {"input": []}),
    (lambda b: ollama.embed_request(b, "m"), {"input": [1]}),
    (lambda b: ollama.model_of(b), {"model": ""}),
])
def test_bad_requests_are_400s_not_crashes(make, body):
    with pytest.raises(OllamaRequestError):
        make(body)


def test_embed_request_and_answer():
    assert ollama.embed_request({"input": "a"}, "m") == {"model": "m", "input": ["a"]}
    assert ollama.embed_request({"prompt": "a"}, "m", legacy=True)["input"] == ["a"]
    answer = {"data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1.0]}],
              "usage": {"prompt_tokens": 4}}
    out = ollama.embed_answer("m", answer, 0.0, 5)
    assert out["embeddings"] == [[1.0], [2.0]] and out["prompt_eval_count"] == 4 and out["load_duration"] == 5
    assert ollama.embed_answer("m", answer, 0.0, 5, legacy=True) == {"embedding": [1.0]}


def test_load_only_and_latest_tag():
    assert ollama.is_load_only("generate", {"model": "m"}) and not ollama.is_load_only("generate", {"prompt": "x"})
    assert ollama.is_load_only("chat", {"messages": []}) and not ollama.is_load_only("embed", {})
    assert ollama.candidates("qwen3:latest") == ["qwen3:latest", "qwen3"] and ollama.candidates("a:q4") == ["a:q4"]


def sse(*events) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def test_a_chat_stream_becomes_ndjson_lines_with_counts():
    chunks = [{"choices": [{"delta": {"role": "assistant"}}]},
              {"choices": [{"delta": {"reasoning_content": "hmm"}}]},
              {"choices": [{"delta": {"content": "Hel"}}]},
              {"choices": [{"delta": {"content": "lo"}, "finish_reason": "length"}]},
              {"choices": [], "timings": {"prompt_n": 5, "prompt_ms": 2.0, "predicted_n": 2, "predicted_ms": 4.5}}]
    wire = sse(*chunks)
    decoder, answer, lines = SseDecoder(), Answer("chat", "m", load_ns=7), []
    for i in range(0, len(wire), 7):  # split anywhere: events are whole once their blank line arrived
        for event in decoder.feed(wire[i:i + 7]):
            lines += answer.take(event)
    lines.append(answer.last())
    assert [line["message"].get("content") for line in lines] == ["", "Hel", "lo", ""]
    assert lines[0]["message"]["thinking"] == "hmm" and not any(line["done"] for line in lines[:-1])
    last = lines[-1]
    assert last["done"] and last["done_reason"] == "length" and last["load_duration"] == 7
    assert (last["prompt_eval_count"], last["eval_count"]) == (5, 2)
    assert (last["prompt_eval_duration"], last["eval_duration"]) == (2_000_000, 4_500_000)


def test_a_whole_answer_with_tool_calls_and_usage_only():
    answer = Answer("chat", "m")
    answer.take({"choices": [{"message": {"role": "assistant", "content": "",
                                          "tool_calls": [{"function": {"name": "f", "arguments": '{"x": 2}'}}]},
                              "finish_reason": "tool_calls"}],
                 "usage": {"prompt_tokens": 3, "completion_tokens": 9}})
    last = answer.last(whole=True)
    assert last["message"]["tool_calls"] == [{"function": {"name": "f", "arguments": {"x": 2}}}]
    assert last["done_reason"] == "stop" and (last["prompt_eval_count"], last["eval_count"]) == (3, 9)


def test_generate_lines_and_completions_text():
    answer = Answer("generate", "m")
    assert answer.take({"choices": [{"text": "abc", "index": 0}]})[0]["response"] == "abc"
    assert answer.last(whole=True)["response"] == "abc"


def test_upstream_error_message():
    assert ollama.upstream_error(400, b'{"error": {"message": "too long"}}') == "too long"
    assert ollama.upstream_error(500, b"boom") == "boom" and ollama.upstream_error(502, b"") == "HTTP 502"


def test_details_and_capabilities():
    d = ollama.details("Qwen3-8B-Q4_K_M.gguf", "qwen3")
    assert (d["quantization_level"], d["family"], d["format"]) == ("Q4_K_M", "qwen3", "gguf")
    assert ollama.details("ggml-org/gemma-3-1b-it-GGUF:Q4_K_M")["quantization_level"] == "Q4_K_M"
    spec = ModelSpec(name="e", model="e.gguf", args=("--embeddings",), mmproj="p.gguf")
    assert ollama.capabilities(spec) == ["embedding", "completion", "vision"]
