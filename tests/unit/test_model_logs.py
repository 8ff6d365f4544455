"""Which model server lines the orchestrator copies into its log: a run's load, then only trouble."""

from __future__ import annotations

import json

import pytest

from orchestrator.backends.docker.model_logs import ModelLogFilter
from orchestrator.backends.docker.watch import model_line

# llama-server runs as they log (this build's, and an older build's wording), and whether "events"
# copies each line.
RUN = [
    ("0.00.002.217 W srv  llama_server: security: no API key is set and CORS allows all origins", True),
    ("0.00.483.438 I srv    load_model: initializing, n_slots = 4, n_ctx_slot = 512, kv_unified = 'true'", True),
    ("0.00.485.230 I srv  llama_server: listening on http://127.0.0.1:18555", True),
    ("0.00.613.636 I slot get_availabl: id  3 | task -1 | selected slot by LRU, t_last = -1", False),
    ("0.00.613.764 I slot launch_slot_: id  3 | task 0 | processing task, is_child = 0", False),
    ("0.00.919.557 I slot print_timing: id  3 | task 0 | prompt eval time =       6.01 ms /    29 tokens", False),
    ("0.00.919.601 I slot      release: id  3 | task 0 | stop processing: n_tokens = 44, truncated = 0", False),
    ("0.01.201.002 W slot update_slots: id  3 | task 9 | n_past was set to 0", True),
    ("0.01.301.002 E srv    send_error: task id = 9, error: request exceeds the available context size", True),
]
OLDER_RUN = [
    ("load_tensors: loading model tensors, this can take a while... (mmap = true)", True),
    ("llama_context: n_ctx = 512", True),
    ("main: model loaded", True),
    ("main: server is listening on http://0.0.0.0:8080 - starting the main loop", True),
    ("srv  update_slots: all slots are idle", False),
    ("slot launch_slot_: id  0 | task 0 | processing task", False),
    ("slot print_timing: id  0 | task 0 | prompt eval time =       3.10 ms /    12 tokens", False),
    ("slot      release: id  0 | task 0 | stop processing: n_tokens = 28, truncated = 0", False),
    ("srv    send_error: task id = 5, error: request (600 tokens) exceeds the available context size", True),
    ("W slot update_slots: context shift is disabled", True),
    ("srv    operator(): operator(): cleaning up before exit...", True),
    ("ggml_cuda_host_malloc: failed to allocate 512.00 MiB of pinned memory: out of memory", True),
]


@pytest.mark.parametrize("run", [RUN, OLDER_RUN])
def test_events_copies_the_load_then_only_trouble(run):
    kept = ModelLogFilter("events")
    assert [kept.keep(line) for line, _ in run] == [expected for _, expected in run]


@pytest.mark.parametrize("mode, expected", [("all", True), ("off", False)])
def test_all_and_off(mode, expected):
    kept = ModelLogFilter(mode)
    assert {kept.keep(line) for line, _ in RUN} == {expected}


def test_a_run_that_never_listens_is_copied_whole():
    kept = ModelLogFilter("events")
    assert all(kept.keep(line) for line in ["llama_model_load: error loading model", "main: exiting due to model "
                                            "loading error", "anything at all"])


def test_a_copied_line_is_json_beside_the_services_own_json_lines():
    assert model_line("tiny", "listening on http://0.0.0.0:8080", as_json=False) == \
        "tiny | listening on http://0.0.0.0:8080\n"
    line = model_line("tiny", 'a "quoted" ✓ line', as_json=True)
    assert line.endswith("\n") and line.count("\n") == 1
    parsed = json.loads(line)
    assert {k: parsed[k] for k in ("level", "logger", "model", "message")} == {
        "level": "INFO", "logger": "llamadock.model", "model": "tiny", "message": 'a "quoted" ✓ line'}
