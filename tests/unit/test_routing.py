import pytest

from gateway.routes.table import ModelRoute, ModelState, RouteTable, RequestError, model_from_body, retry_after_s


def route(name, *aliases, state=ModelState.READY):
    return ModelRoute(name=name, url=f"http://{name}:8080", aliases=aliases, state=state)


TABLE = RouteTable.of([route("qwen3-8b", "llamacpp:qwen3", "gpt-4o-mini"), route("gemma", "Gemma-3")])


@pytest.mark.parametrize(
    "requested, expected",
    [
        ("qwen3-8b", "qwen3-8b"),
        ("llamacpp:qwen3", "qwen3-8b"),
        ("gpt-4o-mini", "qwen3-8b"),
        ("QWEN3-8B", "qwen3-8b"),  # case is forgiven...
        ("gemma-3", "gemma"),
        ("qwen3", None),  # ...but nothing is guessed
        ("", None),
    ],
)
def test_resolve_by_name_alias_and_case(requested, expected):
    found = TABLE.resolve(requested)
    assert (found.name if found else None) == expected


def test_a_name_wins_over_another_models_alias():
    table = RouteTable.of([route("a", "b"), route("b")])
    assert table.resolve("b").name == "b"


def test_exact_case_wins_over_folded_match():
    table = RouteTable.of([route("Model"), route("model")])
    assert table.resolve("model").name == "model"
    assert table.resolve("Model").name == "Model"


def test_with_route_replaces_one_entry_and_keeps_aliases_indexed():
    updated = TABLE.with_route(route("gemma", "Gemma-3", state=ModelState.STOPPED))
    assert updated.resolve("gemma-3").state is ModelState.STOPPED
    assert updated.resolve("qwen3-8b").state is ModelState.READY
    assert TABLE.resolve("gemma").state is ModelState.READY  # the old view is untouched


def test_model_from_body_reads_the_model():
    assert model_from_body(b'{"model": "x", "messages": []}') == "x"


@pytest.mark.parametrize(
    "body, message, param",
    [
        (b"", "empty", None),
        (b"{not json", "not valid JSON", None),
        (b"\xff\xfe", "not valid JSON", None),
        (b"[1, 2]", "JSON object", None),
        (b'{"messages": []}', "must provide a model", "model"),
        (b'{"model": 3}', "non-empty string", "model"),
        (b'{"model": "  "}', "non-empty string", "model"),
    ],
)
def test_model_from_body_explains_bad_bodies(body, message, param):
    with pytest.raises(RequestError, match=message) as raised:
        model_from_body(body)
    assert raised.value.param == param


def test_retry_after_is_short_while_starting_and_longer_when_stopped():
    assert retry_after_s(ModelState.STARTING) < retry_after_s(ModelState.STOPPED) < retry_after_s(ModelState.FAILED)
