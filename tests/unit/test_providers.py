"""Providers' pure parts: reading a /v1/models answer, which models are served under which names,
how they merge with our own (ours win; an ambiguous bare name is nobody's), their state, their key,
and their errors in our format."""

import asyncio
import json

import pytest
from pydantic import ValidationError

from contract.listing import ModelState
from gateway.proxy.provider_answer import Guarded, error_from, screen
from gateway.proxy.upstream import UpstreamTimeout
from gateway.routes.providers import (DiscoveryError, ProviderEntry, combine, key_header, model_ids, provider_routes,
                                      served, status_of)
from gateway.routes.table import ModelRoute


def listing(*ids) -> bytes:
    return json.dumps({"object": "list", "data": [{"id": i, "object": "model"} for i in ids]}).encode()


def test_model_ids_reads_an_openai_list_in_order_once_each():
    assert model_ids(listing("b", "a", "b")) == ["b", "a"]
    assert model_ids(b'{"data": []}') == []


@pytest.mark.parametrize("body, says", [
    (b"<html>hi</html>", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b'{"models": []}', "no 'data' list"),
    (b"[1, 2]", "no 'data' list"),
    (b'{"data": [{"name": "x"}]}', "without an 'id'"),
    (b'{"data": ["x"]}', "without an 'id'"),
])
def test_model_ids_refuses_what_is_no_model_list(body, says):
    with pytest.raises(DiscoveryError, match=says):
        model_ids(body)


def test_entry_takes_the_url_apps_are_given_and_refuses_bad_ones():
    assert ProviderEntry(url="http://127.0.0.1:1234/v1/").url == "http://127.0.0.1:1234"
    assert ProviderEntry(url="https://api.example.com").url == "https://api.example.com"
    for bad in ({"url": "127.0.0.1:1234"}, {"url": "ftp://x"}, {"url": "http://x", "api_key_env": "has space"},
                {"url": "http://x", "rename": {"a": "p:b"}}, {"url": "http://x", "refresh_s": 0}):
        with pytest.raises(ValidationError):
            ProviderEntry(**bad)


@pytest.mark.parametrize("entry, ids, expected", [
    ({}, ["a", "b"], {"a": "a", "b": "b"}),
    ({"models": ["qwen*"]}, ["qwen2.5-7b", "phi-4", "qwen3"], {"qwen2.5-7b": "qwen2.5-7b", "qwen3": "qwen3"}),
    ({"rename": {"qwen2.5-7b-instruct": "qwen7b"}}, ["qwen2.5-7b-instruct"], {"qwen2.5-7b-instruct": "qwen7b"}),
    ({}, ["qwen3:8b"], {"qwen3:8b": "qwen3-8b"}),  # Ollama's tags: a ':' would read as provider:model
])
def test_served(entry, ids, expected):
    assert served(ProviderEntry(url="http://x", **entry), ids) == expected


def test_provider_routes_carry_the_provider_its_id_and_its_key_never_shown():
    entry = ProviderEntry(url="http://x:1", rename={"m1": "one"}, timeout_s=3)
    status = status_of("p", entry, None, None, 1)
    (route,) = provider_routes("p", entry, ["m1"], status, b"Bearer sekrit", {"m1": 42})
    assert (route.name, route.aliases, route.upstream_model, route.provider, route.url, route.created,
            route.timeout_s) == ("p:one", ("one",), "m1", "p", "http://x:1", 42, 3)
    assert route.state is ModelState.READY and "sekrit" not in repr(route)


def own(name, *aliases):
    return ModelRoute(name=name, url="http://own", aliases=aliases)


def offered(provider, model):
    return ModelRoute(name=f"{provider}:{model}", url="http://p", aliases=(model,), provider=provider,
                      upstream_model=model)


@pytest.mark.parametrize("requested, expected", [
    ("qwen3", "qwen3"),  # ours wins the bare name
    ("lmstudio:qwen3", "lmstudio:qwen3"),  # the provider's is still reachable by its prefix
    ("GPT-4O", "gpt"),  # an alias of ours (any case) wins too
    ("phi-4", None),  # two providers have it: only with a prefix
    ("lmstudio:phi-4", "lmstudio:phi-4"),
    ("vllm:phi-4", "vllm:phi-4"),
    ("mistral", "vllm:mistral"),  # one provider has it: the bare name works
])
def test_combine_ours_win_and_an_ambiguous_bare_name_is_nobodys(requested, expected):
    table = combine([own("qwen3"), own("gpt", "gpt-4o")],
                    [offered("lmstudio", "qwen3"), offered("lmstudio", "phi-4"), offered("vllm", "phi-4"),
                     offered("vllm", "mistral"), offered("vllm", "gpt-4o")], {})
    found = table.resolve(requested)
    assert (found.name if found else None) == expected
    listed = {r.name: r.aliases for r in table.routes}
    assert listed["lmstudio:qwen3"] == () and listed["vllm:phi-4"] == () and listed["vllm:mistral"] == ("mistral",)


@pytest.mark.parametrize("error, code, state", [
    (None, None, ModelState.READY),
    ("cannot connect", "provider_unavailable", ModelState.STOPPED),
    ("did not answer", "provider_timeout", ModelState.STOPPED),
    ("refused the key", "provider_auth_failed", ModelState.FAILED),
    ("not JSON", "provider_garbage", ModelState.FAILED),
])
def test_status_of(error, code, state):
    status = status_of("p", ProviderEntry(url="http://x"), error, code, 2)
    assert (status.state, status.reason, status.code, status.models) == (state, error, code, 2)


def test_key_header_reads_the_variable_and_names_it_when_missing():
    entry = ProviderEntry(url="http://x", api_key_env="P_KEY")
    assert key_header(entry, {"P_KEY": "abc"}) == (b"Bearer abc", None)
    header, why = key_header(entry, {})
    assert header is None and "P_KEY" in why
    assert key_header(ProviderEntry(url="http://x"), {}) == (None, None)


@pytest.mark.parametrize("status, body, ours, code, says", [
    (401, b'{"error":{"message":"Invalid API Key","type":"authentication_error","code":401}}', 401,
     "provider_auth_failed", "Invalid API Key"),
    (403, b"forbidden", 401, "provider_auth_failed", "forbidden"),
    (400, b'{"error":{"message":"bad temperature","type":"invalid_request_error","param":"temperature",'
          b'"code":"bad_param"}}', 400, "bad_param", "bad temperature"),
    (404, b'{"error":"model not found"}', 404, "provider_rejected", "model not found"),
    (422, b"", 422, "provider_rejected", "no message"),
    (500, b"<html>oops</html>", 502, "provider_error", "oops"),
])
def test_error_from_a_providers_answer(status, body, ours, code, says):
    error = error_from("lm", status, body)
    assert (error.status, error.code) == (ours, code)
    assert says in error.message and "'lm'" in error.message
    kind = "authentication_error" if ours == 401 else "invalid_request_error" if ours < 500 else "server_error"
    assert error.body()["error"]["type"] == kind


class Pieces:
    """An upstream answer as its pieces; None: the provider stalls there."""

    def __init__(self, status, content_type, *pieces):
        self.status = status
        self.headers = [(b"content-type", content_type)]
        self._pieces = list(pieces)
        self.closed = False

    def header(self, name):
        return dict(self.headers).get(name)

    async def next_piece(self):
        if not self._pieces:
            return None
        piece = self._pieces.pop(0)
        if piece is None:
            await asyncio.sleep(3600)
        return piece

    def close(self):
        self.closed = True


async def test_screen_holds_a_whole_answer_to_json_and_a_size():
    ok = Guarded(Pieces(200, b"application/json", b'{"a"', b": 1}"), idle_s=1)
    assert await screen(ok, "lm", 100) is None
    assert await ok.read() == b'{"a": 1}'  # handed on from memory, whole
    garbage = await screen(Guarded(Pieces(200, b"text/html", b"<html>"), idle_s=1), "lm", 100)
    assert (garbage.status, garbage.code) == (502, "provider_garbage")
    huge = await screen(Guarded(Pieces(200, b"application/json", b"[" + b"1," * 100), idle_s=1), "lm", 100)
    assert (huge.status, huge.code) == (502, "provider_answer_too_large")
    refused = await screen(Guarded(Pieces(401, b"application/json", b'{"error":"no"}'), idle_s=1), "lm", 100)
    assert (refused.status, refused.code) == (401, "provider_auth_failed")


async def test_a_stall_is_a_timeout_never_a_hang():
    stream = Guarded(Pieces(200, b"text/event-stream", b"data: {}\n\n", None), idle_s=0.05)
    assert await screen(stream, "lm", 100) is None  # a stream goes on as it comes
    assert await stream.next_piece() == b"data: {}\n\n"
    with pytest.raises(UpstreamTimeout):
        await stream.next_piece()
    with pytest.raises(UpstreamTimeout):
        await screen(Guarded(Pieces(200, b"application/json", b"{", None), idle_s=0.05), "lm", 100)
