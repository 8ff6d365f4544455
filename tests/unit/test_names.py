"""The names apps send, resolved by RouteTable.find (pure): names, aliases, case, `llamacpp:NAME`,
GGUF file names, a provider's `provider:model` and bare names, and the opt-in default model."""

import json

import pytest

from gateway.routes.table import ModelRoute, ModelState, RouteTable, routed_body, wire_model, with_model


def own(name, *aliases, files=()):
    return ModelRoute(name=name, url=f"http://{name}:8080", aliases=aliases, state=ModelState.READY, files=files)


def provided(provider, model, *aliases):
    return ModelRoute(name=f"{provider}:{model}", url="http://127.0.0.1:1234", aliases=aliases,
                      provider=provider, upstream_model=model)


TABLE = RouteTable.of([
    own("qwen3", "gpt-4o-mini", files=("Qwen3-8B-Q4_K_M.gguf",)),
    own("gemma", files=("sub/gemma-3-1b.gguf",)),
    provided("lmstudio", "phi-4", "phi-4"),
    provided("lmstudio", "qwen3"),  # the provider's qwen3: only by its prefix (ours wins the bare name)
])


@pytest.mark.parametrize("requested, name, by", [
    ("qwen3", "qwen3", "name"),
    ("gpt-4o-mini", "qwen3", "alias"),
    ("GEMMA", "gemma", "case"),
    ("llamacpp:qwen3", "qwen3", "own_provider"),
    ("llamadock:gemma", "gemma", "own_provider"),
    ("LlamaCpp:gpt-4o-mini", "qwen3", "own_provider"),
    ("Qwen3-8B-Q4_K_M.gguf", "qwen3", "file"),
    ("qwen3-8b-q4_k_m", "qwen3", "file"),
    ("gemma-3-1b.gguf", "gemma", "file"),
    ("models/gemma-3-1b.gguf", "gemma", "file"),
    ("lmstudio:phi-4", "lmstudio:phi-4", "name"),
    ("phi-4", "lmstudio:phi-4", "alias"),
    ("lmstudio:qwen3", "lmstudio:qwen3", "name"),
])
def test_find(requested, name, by):
    found = TABLE.find(requested)
    assert (found.route.name, found.by) == (name, by)


@pytest.mark.parametrize("requested", ["", "qwen", "llamacpp:", "llamacpp:phi-4", "openai:qwen3", "nothing.gguf",
                                       "lmstudio:gemma"])
def test_nothing_is_guessed(requested):
    assert TABLE.find(requested) is None  # llamacpp: means ours only; a provider's prefix, its models only


def test_the_default_model_answers_an_unknown_or_missing_name_and_says_so():
    assert (TABLE.find("gpt-5", default="gemma").route.name, TABLE.find("gpt-5", default="gemma").by) == ("gemma", "default")
    assert TABLE.find("", default="llamacpp:qwen3").route.name == "qwen3"
    assert TABLE.find("qwen3", default="gemma").by == "name"  # a known name is never substituted
    assert TABLE.find("gpt-5", default="missing") is None  # a default nobody serves stands in for nothing


def test_provider_of_names_a_known_provider_only():
    from gateway.routes.table import ProviderStatus
    table = RouteTable.of([], {"lmstudio": ProviderStatus("lmstudio", "http://x")})
    assert table.provider_of("lmstudio:anything").name == "lmstudio"
    assert table.provider_of("other:anything") is None and table.provider_of("lmstudio") is None


@pytest.mark.parametrize("route, substituted, wire", [
    (own("qwen3"), False, None),  # ours, named: the body goes as it came
    (own("qwen3"), True, "qwen3"),  # ours, standing in as the default: named, so its answer says who answered
    (provided("lmstudio", "phi-4"), False, "phi-4"),  # a provider knows its model by its own id
    (provided("lmstudio", "phi-4"), True, "phi-4"),
])
def test_wire_model(route, substituted, wire):
    assert wire_model(route, substituted) == wire


def test_with_model_rewrites_only_json_objects_and_only_when_it_changes():
    body = b'{"model": "lmstudio:phi-4", "messages": [{"role": "user", "content": "h\\u00e9"}]}'
    assert json.loads(with_model(body, "phi-4")) == {"model": "phi-4", "messages": [{"role": "user", "content": "hé"}]}
    same = b'{"model":"phi-4"}'
    assert with_model(same, "phi-4") is same
    assert json.loads(with_model(b'{"messages": []}', "gemma"))["model"] == "gemma"  # no model: the default's
    for raw in (b"", b"not json", b"[1]"):
        assert with_model(raw, "x") == raw


def test_a_body_without_model_reads_as_empty_only_when_asked():
    assert routed_body(b'{"messages": []}', model_optional=True).model == ""
    assert routed_body(b'{"model": "", "messages": []}', model_optional=True).model == ""
    from gateway.routes.table import RequestError
    with pytest.raises(RequestError):
        routed_body(b'{"model": "  "}', model_optional=True)
    with pytest.raises(RequestError):
        routed_body(b'{"messages": []}')
