"""Which model server lines the orchestrator copies into its log: a run's load, then only trouble."""

from __future__ import annotations

import pytest

from orchestrator.backends.docker.model_logs import ModelLogFilter

# A llama-server run as it logs (b11312-era wording), and whether "events" copies each line.
RUN = [
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


def test_events_copies_the_load_then_only_trouble():
    kept = ModelLogFilter("events")
    assert [kept.keep(line) for line, _ in RUN] == [expected for _, expected in RUN]


@pytest.mark.parametrize("mode, expected", [("all", True), ("off", False)])
def test_all_and_off(mode, expected):
    kept = ModelLogFilter(mode)
    assert {kept.keep(line) for line, _ in RUN} == {expected}


def test_a_run_that_never_listens_is_copied_whole():
    kept = ModelLogFilter("events")
    assert all(kept.keep(line) for line in ["llama_model_load: error loading model", "main: exiting due to model "
                                            "loading error", "anything at all"])
