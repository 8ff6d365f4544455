"""The body is read once: a /v1 body must be a JSON object naming a model; a raw
/upstream body may be anything, and asking whether it wants a stream never fails."""

import pytest

from gateway.routes.table import RequestError, asks_for_stream, routed_body


def test_routed_body_reads_model_and_stream_in_one_parse():
    assert routed_body(b'{"model": "m", "stream": true}') == routed_body(b'{"stream": true, "model": "m"}')
    fields = routed_body(b'{"model": "m", "stream": true}')
    assert (fields.model, fields.stream) == ("m", True)
    assert routed_body(b'{"model": "m", "stream": "yes"}').stream is False


@pytest.mark.parametrize("body", [b'["stream"]', b'"stream"', b'7', b'null'])
def test_a_body_that_is_not_an_object_is_the_clients_mistake(body):
    with pytest.raises(RequestError, match="JSON object"):
        routed_body(body)


@pytest.mark.parametrize("body, wanted", [
    (b'["stream"]', False), (b'"stream"', False), (b'{"stream": true}', True), (b'{"stream": false}', False),
    (b'{"stream"', False), (b'\xff"stream"', False), (b'', False), (b'stream=true', False),
])
def test_asks_for_stream_takes_any_raw_body(body, wanted):
    assert asks_for_stream(body) is wanted
