"""What a waiting request is told, and the wait estimates in 429/503: pure tables over scheduler states."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from openai.types.chat import ChatCompletionChunk

from gateway.scheduling.progress import (Kind, Progress, ordinal, progress, reasoning_chunk, reasoning_text, sse_comment,
                              wants_reasoning)
from gateway.scheduling.scheduler import (RECENT, Arrive, Finish, Model, Phase, Policy, Reject, Started, State, Tick, Waiter,
                               estimated_wait_s, queue_position, retry_after, step)

READY, STARTING, STOPPING, STOPPED = Phase.READY, Phase.STARTING, Phase.STOPPING, Phase.STOPPED
MiB = 2**20


def model(name="a", phase=READY, *, limit=1, queue=32, waiting=(), in_flight=0, need=0, group=None,
          requests=(), starts=(), starting_since=0.0) -> Model:
    return Model(name, Policy(limit=limit, queue=queue, need={"budget": need} if need else {}, swap_group=group),
                 phase, in_flight, tuple(Waiter(r, 0.0) for r in waiting),
                 starting_since=starting_since, recent_requests_s=tuple(requests), recent_starts_s=tuple(starts))


def state(*models: Model, capacity=None) -> State:
    return State(models={m.name: m for m in models}, capacity=capacity or {})


# ---- ordinals and positions --------------------------------------------------------------------

@pytest.mark.parametrize("n, text", [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"),
                                     (13, "13th"), (21, "21st"), (22, "22nd"), (101, "101st"), (111, "111th")])
def test_ordinal(n, text):
    assert ordinal(n) == text


def test_queue_position_is_1_based_and_none_once_not_waiting():
    m = model(waiting=[7, 8, 9])
    assert [queue_position(m, rid) for rid in (7, 8, 9, 10)] == [1, 2, 3, None]


# ---- the estimate ------------------------------------------------------------------------------

@pytest.mark.parametrize("m, position, now, expected", [
    # Ready, every slot busy: position / slots x the mean request duration.
    (model(requests=[10.0]), 1, 0.0, 10.0),
    (model(requests=[10.0]), 3, 0.0, 30.0),
    (model(limit=2, requests=[4.0, 8.0]), 3, 0.0, 9.0),
    (model(requests=[]), 1, 0.0, None),  # nothing measured yet
    # Starting: what is left of its usual start; beyond the first slots, their requests too.
    (model(phase=STARTING, starts=[20.0], starting_since=100.0), 1, 105.0, 15.0),
    (model(phase=STARTING, starts=[20.0], starting_since=100.0), 1, 130.0, 0.0),  # late: any moment now
    (model(phase=STARTING, starts=[20.0], requests=[6.0], starting_since=100.0), 3, 110.0, 22.0),
    (model(phase=STARTING, starts=[20.0], starting_since=100.0), 2, 110.0, None),  # no request measured
    (model(phase=STARTING, starts=[], starting_since=100.0), 1, 110.0, None),
    # Stopped (or stopping): a whole start.
    (model(phase=STOPPED, starts=[12.0, 18.0]), 1, 0.0, 15.0),
    (model(phase=STOPPING, starts=[12.0]), 1, 0.0, 12.0),
])
def test_estimated_wait(m, position, now, expected):
    assert estimated_wait_s(m, position, now) == pytest.approx(expected) if expected is not None \
        else estimated_wait_s(m, position, now) is None


@pytest.mark.parametrize("wait, default, expected", [(None, 1, 1), (None, 5, 5), (0.0, 1, 1), (0.2, 5, 1),
                                                     (9.1, 1, 10), (30.0, 1, 30), (5000.0, 1, 600)])
def test_retry_after_follows_the_estimate(wait, default, expected):
    assert retry_after(wait, default) == expected


# ---- timing kept by the scheduler ----------------------------------------------------------------

def test_the_scheduler_learns_start_and_request_durations_from_its_events():
    s = state(model(phase=STOPPED))
    s, actions = step(s, Arrive(1, "a", 100.0))
    assert s.models["a"].phase is STARTING and s.models["a"].starting_since == 100.0
    s, _ = step(s, Started("a", 112.5))
    assert s.models["a"].recent_starts_s == (12.5,)
    s, _ = step(s, Finish(1, "a", 120.0, duration_s=7.5))
    s, _ = step(s, Finish(2, "a", 121.0))  # no duration (not admitted): learns nothing
    assert s.models["a"].recent_requests_s == (7.5,)


def test_only_the_last_few_durations_count():
    s = state(model(in_flight=RECENT + 3))
    for i in range(RECENT + 3):
        s, _ = step(s, Finish(i, "a", float(i), duration_s=float(i)))
    assert s.models["a"].recent_requests_s == tuple(float(i) for i in range(3, RECENT + 3))


def test_429_says_the_queue_and_the_estimate_and_retry_after_follows_it():
    s = state(model(in_flight=1, queue=2, waiting=[7, 8], requests=[10.0]))
    _, actions = step(s, Arrive(1, "a", 5.0))
    [reject] = actions
    assert isinstance(reject, Reject) and reject.status == 429
    assert (reject.queue_length, reject.estimated_wait_s, reject.retry_after_s) == (2, 30.0, 30)
    assert "2 waiting" in reject.message and "Estimated wait: 30 s." in reject.message


def test_queue_timeout_503_says_what_still_waits_and_the_estimate():
    s = replace(state(model(phase=STARTING, limit=2, starts=[50.0], starting_since=0.0)), queue_timeout_s=10)
    s = s.with_model(replace(s.models["a"], queue=(Waiter(1, 0.0), Waiter(2, 5.0))))
    _, actions = step(s, Tick(10.0))
    [reject] = actions
    assert (reject.rid, reject.status, reject.queue_length) == (1, 503, 1)
    assert reject.estimated_wait_s == pytest.approx(40.0) and reject.retry_after_s == 40
    assert "1 still waiting" in reject.message and "Estimated wait: 40 s." in reject.message


# ---- what a waiting request is told ------------------------------------------------------------

@pytest.mark.parametrize("s, rid, now, kind, text, position", [
    (state(model("qwen3", STARTING, waiting=[1, 2], starting_since=100.0)), 2, 112.34, Kind.LOADING,
     "loading qwen3 12.3 s", 2),
    (state(model("a", READY, in_flight=1, waiting=[4, 5, 6])), 6, 0.0, Kind.QUEUED, "queued 3rd", 3),
    (state(model("a", READY, in_flight=1, waiting=[4])), 4, 0.0, Kind.QUEUED, "queued 1st", 1),
    (state(model("a", STOPPING, waiting=[1])), 1, 0.0, Kind.WAITING, "waiting for its previous run to stop", 1),
    # Room: another model frees its memory.
    (state(model("a", STOPPED, waiting=[1], need=200 * MiB), model("x", STOPPING, need=200 * MiB),
           capacity={"budget": 300 * MiB}), 1, 0.0, Kind.WAITING, "waiting for x to free its memory", 1),
    # Room: busy models hold it.
    (state(model("a", STOPPED, waiting=[1], need=200 * MiB), model("x", READY, in_flight=1, need=200 * MiB),
           capacity={"budget": 300 * MiB}), 1, 0.0, Kind.WAITING,
     "waiting for room: 100 MiB more needed in budget; busy models hold it. Loaded: x 200 MiB (busy)", 1),
    # A swap-group rival.
    (state(model("a", STOPPED, waiting=[1], group="g"), model("b", STOPPING, group="g")), 1, 0.0, Kind.WAITING,
     "waiting for room: stopping b (swap group 'g')", 1),
    (state(model("a", STOPPED, waiting=[1], group="g"), model("b", READY, in_flight=1, group="g")), 1, 0.0,
     Kind.WAITING, "waiting for b to be idle (swap group 'g')", 1),
], ids=["loading", "queued-3rd", "queued-1st", "own-stop", "freeing", "busy-room", "swap-stopping", "swap-busy"])
def test_progress(s, rid, now, kind, text, position):
    p = progress(s, next(iter(s.models)), rid, now)
    assert (p.kind, p.text, p.position) == (kind, text, position)


@pytest.mark.parametrize("s, model_name, rid", [
    (state(model(in_flight=1, waiting=[1])), "a", 2),  # admitted (or refused): not in the queue
    (state(model(in_flight=1, waiting=[1])), "nope", 1),  # no such model
])
def test_no_progress_for_a_request_that_does_not_wait(s, model_name, rid):
    assert progress(s, model_name, rid, 0.0) is None


def test_only_real_changes_change_the_key():
    s = state(model("a", STARTING, waiting=[1], starting_since=0.0))
    assert progress(s, "a", 1, 1.0).key == progress(s, "a", 1, 5.0).key  # seconds ticking: not a change
    ready = state(model("a", READY, in_flight=1, waiting=[1]))
    assert progress(s, "a", 1, 1.0).key != progress(ready, "a", 1, 1.0).key  # loaded, now queued
    behind = state(model("a", READY, in_flight=1, waiting=[0, 1]))
    assert progress(ready, "a", 1, 1.0).key != progress(behind, "a", 1, 1.0).key  # moved up


def test_the_estimate_comes_with_the_progress():
    s = state(model("a", READY, limit=2, in_flight=2, waiting=[1, 2, 3], requests=[6.0]))
    assert progress(s, "a", 3, 0.0).estimated_wait_s == pytest.approx(9.0)
    assert progress(s, "a", 3, 0.0).queue_length == 3


# ---- how it is written -------------------------------------------------------------------------

def test_sse_comment_is_one_line():
    assert sse_comment("queued 3rd") == b": queued 3rd\n\n"
    assert sse_comment("two\nlines\n\nhere") == b": two lines here\n\n"  # a newline would end the comment


@pytest.mark.parametrize("p, text", [
    (Progress(Kind.LOADING, "loading qwen3 12.3 s", "qwen3", 1, 1, None, 12.3), "Loading qwen3… 12 s\n"),
    (Progress(Kind.QUEUED, "queued 3rd", "a", 3, 3, 30.4), "Queued 3rd for a, about 30 s\n"),
    (Progress(Kind.QUEUED, "queued 1st", "a", 1, 1, None), "Queued 1st for a\n"),
    (Progress(Kind.WAITING, "waiting for x to free its memory", "a", 1, 1, None), "Waiting for x to free its memory\n"),
])
def test_reasoning_text(p, text):
    assert reasoning_text(p) == text


def test_reasoning_chunk_is_one_the_openai_client_parses():
    event = reasoning_chunk("Loading qwen3… 12 s\n", "qwen3", "chatcmpl-x", 1700000000)
    assert event.startswith(b"data: ") and event.endswith(b"\n\n") and event.count(b"\n\n") == 1
    chunk = ChatCompletionChunk.model_validate(json.loads(event[len(b"data: "):]))
    assert chunk.object == "chat.completion.chunk" and chunk.model == "qwen3"
    assert chunk.choices[0].delta.model_extra["reasoning_content"] == "Loading qwen3… 12 s\n"
    assert chunk.choices[0].delta.content is None and chunk.choices[0].finish_reason is None


@pytest.mark.parametrize("headers, query, wanted", [
    ({"x-llamadock-progress": "reasoning"}, {}, True),
    ({"x-llamadock-progress": " Reasoning "}, {}, True),
    ({}, {"progress": "reasoning"}, True),
    ({"x-llamadock-progress": "comments"}, {}, False),
    ({}, {"progress": "1"}, False),
    (None, None, False),
])
def test_opt_in(headers, query, wanted):
    assert wants_reasoning(headers, query) is wanted
