"""Reading a streamed chat answer: SSE framing, odd characters, errors, and the stats it adds up to."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from cli.params import Params
from cli.sessions import Session
from cli.sse import SseComment, SseEvent, SseParser
from cli.stream import (Answer, Content, Done, Failure, Finish, Progress, Reasoning, Usage, chat_events,
                        completion_request)
from cli.waiting import Waiting, waiting_label


def chunk(content: str) -> str:
    return "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": content}}]},
                                 ensure_ascii=False) + "\n\n"


def feed_all(parser: SseParser, pieces: list[bytes]) -> list[SseEvent]:
    events = [event for piece in pieces for event in parser.feed(piece)]
    return events + parser.close()


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


ODD = "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg\x1dh\x1ei" + "é€😀中"
BODY = (chunk("Hello") + chunk(ODD) + ": keep-alive comment\n\n" + chunk(" world") + "data: [DONE]\n\n").encode()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, len(BODY)])
def test_events_survive_any_chunk_boundary(size):
    events = feed_all(SseParser(), split_every(BODY, size))
    texts = [e.text for sse in events for e in chat_events(sse) if isinstance(e, Content)]
    assert texts == ["Hello", ODD, " world"]
    assert isinstance(chat_events(events[-1])[0], Done)


def test_a_multibyte_character_split_across_reads_comes_out_whole():
    raw = chunk("😀").encode()
    cut = raw.index("😀".encode()) + 2  # inside the 4-byte sequence
    parser = SseParser()
    assert parser.feed(raw[:cut]) == []
    [event] = parser.feed(raw[cut:])
    assert chat_events(event) == [Content("😀")]


def test_line_separators_inside_data_do_not_split_lines():
    # If the parser used str.splitlines, U+2028 in the raw (unescaped) JSON would cut the event in two.
    [event] = SseParser().feed("data: {\"x\": \"1\u20282\x853\"}\n\n".encode())
    assert json.loads(event.data) == {"x": "1\u20282\x853"}


def test_crlf_line_endings_and_multi_line_data():
    events = SseParser().feed(b"event: note\r\ndata: one\r\ndata:two\r\n\r\n")
    assert events == [SseEvent("one\ntwo", "note")]


def test_an_event_without_a_final_blank_line_is_kept_at_close():
    parser = SseParser()
    assert parser.feed(b"data: [DONE]") == []
    assert parser.close() == [SseEvent("[DONE]")]


def test_unknown_fields_are_ignored_and_comments_come_as_they_are():
    assert SseParser().feed(b": ping\nid: 4\nretry: 10\n\n") == [SseComment("ping")]
    assert SseParser().feed(b":\n:no space\r\n") == [SseComment(""), SseComment("no space")]


@pytest.mark.parametrize("line, note", [
    (": llamadock: waiting for model 'x' (3 s)", "waiting for model 'x' (3 s)"),  # the relay's keep-alive
    (": loading qwen3 12.3 s", "loading qwen3 12.3 s"),
    (": queued 3rd", "queued 3rd"),
    (":llamadock:queued 1st", "queued 1st"),
    (": llamadock:", None),
    (":", None),
    (":   ", None),
])
def test_gateway_comments_become_progress_notes(line, note):
    [comment] = SseParser().feed((line + "\n").encode())
    assert chat_events(comment) == ([Progress(note)] if note else [])


def test_progress_notes_between_events_and_split_across_reads():
    body = (": loading tiny 0.5 s\n\n: queued 2nd\n" + chunk("Hi") + ": ping\n" + "data: [DONE]\n\n").encode()
    for size in (1, 3, len(body)):
        events = [e for sse in feed_all(SseParser(), split_every(body, size)) for e in chat_events(sse)]
        assert events == [Progress("loading tiny 0.5 s"), Progress("queued 2nd"), Content("Hi"), Progress("ping"),
                          Done()]


def test_a_comment_inside_an_event_does_not_cut_it():
    events = SseParser().feed(b"data: one\n: note\ndata: two\n\n")
    assert events == [SseComment("note"), SseEvent("one\ntwo")]


def test_progress_does_not_count_as_a_token():
    answer = Answer(started_at=0.0)
    answer.apply(Progress("loading x 1.0 s"), 1.0)
    answer.apply(Content("a"), 2.0)
    assert answer.chunks == 1 and answer.stats().first_token_s == 2.0


def test_the_spinner_shows_the_note_else_the_wait():
    assert waiting_label("qwen3", None, 4.4) == "waiting for qwen3 · 4 s"
    assert waiting_label("qwen3", "queued 3rd", 4.4) == "queued 3rd"
    clock = iter([0.0, 2.0, 5.0]).__next__
    view = Waiting("tiny", started_at=clock(), clock=clock)
    console = Console(width=80, record=True, color_system=None)
    console.print(view)
    view.note = "loading tiny 0.5 s"
    console.print(view)
    text = console.export_text()
    assert "waiting for tiny · 2 s" in text and "loading tiny 0.5 s" in text


def test_the_gateways_error_event_becomes_one_failure():
    body = b'event: error\ndata: {"error": {"message": "The model \'tiny-a\' broke off its answer: gone.", ' \
           b'"type": "server_error"}}\n\n'
    [event] = SseParser().feed(body)
    assert chat_events(event) == [Failure("The model 'tiny-a' broke off its answer: gone.")]


def test_an_error_object_in_plain_data_is_a_failure_too():
    assert chat_events(SseEvent('{"error": {"code": 500, "message": "boom"}}')) == [Failure("boom")]
    assert chat_events(SseEvent("not json", "error")) == [Failure("not json")]


def test_garbage_data_is_skipped():
    assert chat_events(SseEvent("{truncated")) == []
    assert chat_events(SseEvent("[1, 2]")) == []


def test_reasoning_finish_and_usage():
    final = {"choices": [], "usage": {"completion_tokens": 12, "prompt_tokens": 3},
             "timings": {"predicted_n": 12, "predicted_per_second": 1234.5}}
    assert chat_events(SseEvent(json.dumps({"choices": [{"delta": {"reasoning_content": "hmm"}}]}))) == \
        [Reasoning("hmm")]
    assert chat_events(SseEvent(json.dumps({"choices": [{"delta": {}, "finish_reason": "length"}]}))) == \
        [Finish("length")]
    assert chat_events(SseEvent(json.dumps(final))) == [Usage(12, 1234.5)]
    assert chat_events(SseEvent(json.dumps({"choices": [], "timings": {"predicted_n": 5}}))) == [Usage(5, None)]


def test_request_asks_for_usage_and_sends_only_set_params():
    session = Session(model="tiny-a", system="Be brief.", params=Params(temperature=0.2, seed=42),
                      messages=[{"role": "user", "content": "hi"}])
    assert completion_request(session) == {
        "model": "tiny-a",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.2, "seed": 42,
    }


def test_stats_prefer_the_servers_count_and_rate():
    answer = Answer(started_at=10.0)
    answer.apply(Content("a"), 10.25)
    answer.apply(Content("b"), 10.5)
    answer.apply(Finish("stop"), 10.5)
    answer.apply(Usage(40, 800.0), 10.5)
    answer.end(11.0)
    stats = answer.stats()
    assert (stats.tokens, stats.tokens_counted, stats.tokens_per_second) == (40, True, 800.0)
    assert stats.first_token_s == pytest.approx(0.25) and stats.total_s == pytest.approx(1.0)
    assert answer.text == "ab" and not stats.stopped


def test_stats_of_a_stopped_answer_count_chunks_and_time_them():
    answer = Answer(started_at=0.0)
    for i in range(11):
        answer.apply(Content("x"), 1.0 + i * 0.1)
    answer.stop(2.5)
    stats = answer.stats()
    assert (stats.tokens, stats.tokens_counted, stats.stopped) == (11, False, True)
    assert stats.tokens_per_second == pytest.approx(10.0)  # 10 tokens after the first, in 1 s
    assert stats.first_token_s == 1.0 and stats.total_s == 2.5


def test_stats_without_any_token():
    answer = Answer(started_at=0.0)
    answer.apply(Failure("gone"), 0.1)
    answer.end(0.2)
    stats = answer.stats()
    assert (stats.tokens, stats.tokens_per_second, stats.first_token_s) == (0, None, None)
    assert answer.error == "gone"
