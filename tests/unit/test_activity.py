"""The activity record: token counts from the tail of llama-server's answers, the split of a wait
into queueing and loading, the in-memory ring, and its one log line (plain and JSON)."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime, timezone

import pytest

from common.logs import configure_logging
from contract.activity import ActivityRecord
from gateway.activity import ActivityLog, TokenCounts, counts_from_tail, split_wait

STREAM_END = (b'data: {"choices":[{"finish_reason":"length","index":0,"delta":{}}],"created":1,"id":"c",'
              b'"model":"tiny","object":"chat.completion.chunk","usage":{"completion_tokens":16,"prompt_tokens":12,'
              b'"total_tokens":28,"prompt_tokens_details":{"cached_tokens":0}},"timings":{"cache_n":0,"prompt_n":12,'
              b'"prompt_ms":3.1,"prompt_per_token_ms":0.26,"prompt_per_second":3870.9,"predicted_n":16,'
              b'"predicted_ms":9.5,"predicted_per_token_ms":0.59,"predicted_per_second":1684.2}}\n\ndata: [DONE]\n\n')
WHOLE = (b'{"choices":[{"message":{"role":"assistant","content":"say \\"prompt_tokens\\": 999"}}],'
         b'"usage":{"completion_tokens":5,"prompt_tokens":9,"total_tokens":14},'
         b'"timings":{"cache_n":4,"prompt_n":5,"predicted_n":5,"predicted_per_second":900.5}}')
TIMINGS_ONLY = b'data: {"choices":[],"timings":{"cache_n":7,"prompt_n":3,"predicted_n":21,"predicted_per_second":50}}\n\n'
ANTHROPIC = (b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},'
             b'"usage":{"output_tokens":8}}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n')
ESCAPED_ONLY = b'data: {"choices":[{"delta":{"content":"\\"completion_tokens\\": 5, \\"timings\\": {}"}}]}\n\n'


@pytest.mark.parametrize("tail, expected", [
    (STREAM_END, TokenCounts(12, 16, 1684.2)),
    (WHOLE, TokenCounts(9, 5, 900.5)),  # a key inside the generated text is escaped: never read
    (TIMINGS_ONLY, TokenCounts(10, 21, 50.0)),  # prompt_n counts only what the cache did not hold
    (ANTHROPIC, TokenCounts(None, 8, None)),
    (ESCAPED_ONLY, TokenCounts(None, None, None)),
    (b"", TokenCounts()),
    (b'{"timings":{"predicted_n": not json}}', TokenCounts()),
])
def test_token_counts_from_the_end_of_an_answer(tail, expected):
    assert counts_from_tail(tail) == expected


@pytest.mark.parametrize("arrived, settled, ready_since, expected", [
    (10.0, 10.0, 5.0, (0.0, 0.0)),  # let through at once
    (10.0, 13.0, 5.0, (3.0, 0.0)),  # its model ready all along: every slot was busy
    (10.0, 13.0, 12.0, (1.0, 2.0)),  # it loaded for 2 s, then 1 s in the queue behind earlier ones
    (10.0, 13.0, 13.0, (0.0, 3.0)),  # let through as the model became ready
    (10.0, 13.0, None, (0.0, 3.0)),  # refused while the model was not ready: all of it was the load
    (10.0, 9.0, None, (0.0, 0.0)),  # clocks never give a negative wait
])
def test_a_wait_splits_into_queueing_and_loading(arrived, settled, ready_since, expected):
    assert split_wait(arrived, settled, ready_since) == pytest.approx(expected)


def record(model: str, n: int, **fields) -> ActivityRecord:
    fields = {"status": 200, **fields}
    return ActivityRecord(at=datetime(2026, 1, 1, tzinfo=timezone.utc), model=model, dialect="openai",
                          endpoint="chat/completions", duration_s=float(n), **fields)


def test_the_ring_keeps_the_newest_and_lists_them_newest_first():
    log = ActivityLog(3)
    for n, model in enumerate(["a", "b", "a", "b", "a"]):
        log.add(record(model, n))
    assert [r.duration_s for r in log.latest()] == [4.0, 3.0, 2.0]  # 0 and 1 dropped out
    assert [r.duration_s for r in log.latest(model="a")] == [4.0, 2.0]
    assert [r.duration_s for r in log.latest(limit=1)] == [4.0]
    assert log.latest(model="nope") == []


def test_a_ring_of_size_zero_keeps_nothing_but_still_logs(caplog):
    log = ActivityLog(0)
    with caplog.at_level(logging.INFO, logger="llamadock.activity"):
        log.add(record("a", 1))
    assert log.latest() == [] and len(caplog.records) == 1


def test_one_line_per_request_says_what_happened():
    line = ActivityRecord(
        at=datetime(2026, 1, 1, tzinfo=timezone.utc), model="qwen3", dialect="ollama", endpoint="chat/completions",
        stream=True, status=499, queue_wait_s=0.5, load_wait_s=12.25, ttft_s=12.9, tokens_in=30, tokens_out=200,
        tokens_per_s=55.55, duration_s=16.0, client_disconnected=True).line()
    assert line == ("model=qwen3 dialect=ollama endpoint=chat/completions status=499 stream=yes queue=0.500s "
                    "load=12.250s ttft=12.900s in=30 out=200 tok/s=55.5 took=16.000s client=gone")
    refused = record("x", 1, status=503, error="scheduler_refused").line()
    assert "ttft=- in=- out=- tok/s=-" in refused and refused.endswith("error=scheduler_refused")


def test_in_json_the_line_is_one_object_with_the_record_in_it():
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        ActivityLog(1).add(record("a", 3, tokens_out=7))
    finally:
        configure_logging("info", "plain")
    (line,) = out.getvalue().splitlines()
    logged = json.loads(line)
    assert logged["level"] == "INFO" and logged["logger"] == "llamadock.activity" and "time" in logged
    assert logged["message"].startswith("model=a ")
    assert ActivityRecord.model_validate(logged["activity"]) == record("a", 3, tokens_out=7)
