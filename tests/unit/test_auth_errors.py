import json

from gateway import errors
from gateway.auth import key_is_valid
from gateway.api import anthropic, openai


def test_keys_off_lets_everyone_in():
    assert key_is_valid(None, [])


def test_keys_on_need_one_of_them():
    assert key_is_valid("k2", ["k1", "k2"])
    assert not key_is_valid("k3", ["k1", "k2"])
    assert not key_is_valid(None, ["k1"])
    assert not key_is_valid("", ["k1"])


def test_not_found_names_the_available_models():
    error = errors.model_not_found("nope", ["a", "b"])
    body = error.body()["error"]
    assert error.status == 404 and "a, b" in body["message"] and body["code"] == "model_not_found"
    assert set(body) == {"message", "type", "param", "code"}


def test_not_ready_carries_retry_after():
    error = errors.model_not_ready("a", "starting", "loading the model", 2)
    assert error.status == 503 and error.headers == {"Retry-After": "2"}
    assert "loading the model" in error.message


def test_sse_error_event_is_one_complete_event_in_either_dialect():
    error = errors.upstream_broken("a", "gone")
    for dialect, is_anthropic in ((openai.PLAIN, False), (anthropic.DIALECT, True)):
        event = dialect.stream_error(error)
        assert event.startswith(b"event: error\ndata: ") and event.endswith(b"\n\n") and event.count(b"\n\n") == 1
        payload = json.loads(event.split(b"data: ", 1)[1])
        assert ("type" in payload) is is_anthropic and "gone" in json.dumps(payload)
