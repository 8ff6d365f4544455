"""Rendering helpers: bars, the stats line, GPU and status views, the live Markdown answer."""

from __future__ import annotations

import re

import pytest
from rich.console import Console

from cli.live_answer import LiveAnswer, SettledBlock, displayable, open_fence, settled_length, visible_tail
from cli.model_list import ModelInfo, find_model, models_from_listing, only_ready_model, pick_model
from cli.params import Params
from cli.render import (bar_style, duration, gpu_view, memory_bar, params_table, stats_line, status_view,
                        vram_by_model)
from cli.stream import AnswerStats
from contract.gpu import GpuStatus
from contract.status import GatewayStatus, ModelList, ModelObject
from support.listing import listing as served_listing, status

GIB = 1024**3
STATS_RE = re.compile(r"^\d+ tokens · \d+\.\d tok/s · TTFT \d+ ms · ")


def plain(renderable, width: int = 120) -> str:
    console = Console(width=width, color_system=None, force_terminal=False)
    with console.capture() as captured:
        console.print(renderable)
    return captured.get()


# --- text -----------------------------------------------------------------------

@pytest.mark.parametrize("used, total, bar", [
    (0, 8 * GIB, "░░░░░░░░░░ 0%"),
    (4 * GIB, 8 * GIB, "█████░░░░░ 50%"),
    (8 * GIB, 8 * GIB, "██████████ 100%"),
    (9 * GIB, 8 * GIB, "██████████ 100%"),
    (1 * GIB, 3 * GIB, "███░░░░░░░ 33%"),
    (None, 8 * GIB, "??????????"),
    (1, 0, "??????????"),
])
def test_memory_bar(used, total, bar):
    assert memory_bar(used, total, width=10) == bar


def test_bar_colour_warns_as_memory_fills():
    assert [bar_style(used, 10) for used in (1, 7, 9)] == ["green", "yellow", "red"]
    assert bar_style(None, 10) == "dim"


def test_stats_line():
    stats = AnswerStats(tokens=412, tokens_counted=True, tokens_per_second=1267.74, first_token_s=0.012,
                        total_s=0.34)
    assert stats_line(stats) == "412 tokens · 1267.7 tok/s · TTFT 12 ms · 340 ms total"
    assert STATS_RE.match(stats_line(stats))


def test_stats_line_of_a_stopped_or_truncated_answer():
    stopped = AnswerStats(tokens=9, tokens_counted=False, tokens_per_second=None, first_token_s=1.5, total_s=75,
                          stopped=True)
    assert stats_line(stopped) == "stopped · ~9 tokens · TTFT 1.50 s · 1m15s total"
    cut = AnswerStats(tokens=16, tokens_counted=True, tokens_per_second=10.0, first_token_s=0.2, total_s=2,
                      finish_reason="length")
    assert stats_line(cut).endswith("· max_tokens or context reached")
    nothing = AnswerStats(tokens=0, tokens_counted=False, tokens_per_second=None, first_token_s=None, total_s=0.1)
    assert stats_line(nothing) == "~0 tokens · no tokens · 100 ms total"


def test_durations():
    assert [duration(s) for s in (0.0004, 0.25, 1, 59.994, 61)] == ["0 ms", "250 ms", "1.00 s", "59.99 s", "1m01s"]


# --- models, GPUs, status ------------------------------------------------------------

NO_GPU = GpuStatus.model_validate({"available": False, "reason": "NVML library not found", "gpus": []})
ONE_GPU = GpuStatus.model_validate({"available": True, "gpus": [{
    "index": 0, "name": "NVIDIA H100", "memory": {"total_bytes": 80 * GIB, "used_bytes": 60 * GIB},
    "utilization": {"gpu_percent": 97}, "temperature_c": 71, "power_w": 350.4, "power_limit_w": 700.0,
    "models": {"qwen3": 20 * GIB, "gemma": 4 * GIB},
}, {
    "index": 1, "name": None, "memory": {}, "utilization": {}, "temperature_c": None, "models": {"qwen3": GIB},
}]})


def test_no_gpu_is_said_plainly():
    assert plain(gpu_view(NO_GPU)).strip() == "No GPU: NVML library not found. Models run on the CPU."


def test_gpu_table_has_bar_utilization_temperature_and_unknowns():
    text = plain(gpu_view(ONE_GPU))
    assert "NVIDIA H100" in text and "███████████████░░░░░ 75%" in text
    assert "60.0 GiB / 80.0 GiB" in text and "97%" in text and "71 °C" in text and "350 / 700 W" in text
    assert "? / ?" in text, "a GPU whose driver says nothing shows question marks, not a crash"


def test_vram_is_summed_per_model_over_gpus():
    assert vram_by_model(ONE_GPU) == {"qwen3": 21 * GIB, "gemma": 4 * GIB}
    assert vram_by_model(NO_GPU) == {}


def test_status_shows_models_state_vram_and_current():
    status = GatewayStatus(models=[{"id": "qwen3", "state": "ready"}, {"id": "gemma", "state": "starting",
                                                                      "reason": "loading"}],
                           gpu=ONE_GPU, orchestrator_error="orchestrator away")
    text = plain(status_view(status, current="qwen3"))
    assert re.search(r"qwen3 ●\s*│ ready\s*│\s*│ 21\.0 GiB", text)
    assert re.search(r"gemma\s*│ starting\s*│\s*│ 4\.0 GiB\s*│ loading", text)
    assert "orchestrator away" in text
    no_gpu = plain(status_view(GatewayStatus(models=[{"id": "tiny", "state": "ready"}], gpu=NO_GPU)))
    assert "VRAM" not in no_gpu and "No GPU: NVML library not found" in no_gpu


def test_params_show_what_is_set_and_what_is_default():
    text = plain(params_table(Params(temperature=0.2, seed=42)))
    assert re.search(r"temperature\s+0\.2", text) and re.search(r"top_p\s+server default", text)
    assert re.search(r"seed\s+42", text)


# --- the model picker ---------------------------------------------------------------

MODELS = models_from_listing(ModelList.model_validate({"data": [
    {"id": "tiny-a", "state": "ready", "aliases": ["gpt-4o-mini"]},
    {"id": "tiny-b", "state": "starting", "reason": "loading"},
]}).data)


def test_models_from_the_listing():
    assert MODELS[0] == ModelInfo("tiny-a", "ready", None, ("gpt-4o-mini",))
    assert find_model(MODELS, "gpt-4o-mini").name == "tiny-a"
    assert find_model(MODELS, "nope") is None


def test_the_only_ready_model_is_chosen_without_asking():
    assert only_ready_model(MODELS).name == "tiny-a"
    assert only_ready_model(models_from_listing([ModelObject(id="a"), ModelObject(id="b")])) is None


@pytest.mark.parametrize("answer, expected", [("1", "tiny-a"), (" 2 ", "tiny-b"), ("tiny-b", "tiny-b"),
                                              ("gpt-4o-mini", "tiny-a")])
def test_pick_by_number_or_name(answer, expected):
    assert pick_model(MODELS, answer).name == expected


@pytest.mark.parametrize("answer", ["0", "3", "nope", ""])
def test_a_bad_pick_says_what_to_type(answer):
    assert pick_model(MODELS, answer).startswith(("Pick a number from 1 to 2", "No model named"))


# --- the live answer ------------------------------------------------------------------

def test_display_neutralises_terminal_controls_and_line_separators():
    assert displayable("a\x1b[31mred\x07\x9b2J\tok\nnext\u2028line") == "a\ufffd[31mred\ufffd\ufffd2J\tok\nnext\nline"


@pytest.mark.parametrize("text, settled", [
    ("one paragraph still going", ""),
    ("para one\n\npara two", "para one\n\n"),
    ("para one\n\n", ""),  # the next block has not begun: the first may still continue
    ("a\n\nb\n\nc", "a\n\nb\n\n"),
    ("- item\n\n  continued in the item", ""),  # indented: could belong to the item
    ("```py\nx = 1\n\ny = 2\n", ""),  # a blank line inside an open fence
    ("```py\nx = 1\n\ny = 2\n```\n\nafter", "```py\nx = 1\n\ny = 2\n```\n\n"),
    ("~~~\n```\n\nstill code\n~~~\n\nout", "~~~\n```\n\nstill code\n~~~\n\n"),
])
def test_settled_markdown_stops_before_anything_that_could_still_change(text, settled):
    assert text[:settled_length(text)] == settled


def test_visible_tail_reopens_a_code_fence():
    text = "intro\n```python\n" + "".join(f"line{i}\n" for i in range(100))
    tail = visible_tail(text, 40)
    assert tail.startswith("```python\n") and tail.endswith("line99\n") and len(tail) < 60
    assert open_fence(text) == "```python" and open_fence(text + "```\n") is None
    assert visible_tail("short", 40) == "short"


def test_live_answer_prints_settled_blocks_and_renders_the_rest():
    view = LiveAnswer()
    view.add_reasoning("thinking hard")
    assert view.take_settled() == []
    view.add_content("# Title\n\nFirst paragraph.\n\nSecond")
    thinking, blocks = view.take_settled()
    assert plain(thinking).strip() == "thinking hard"
    assert [line.strip() for line in plain(blocks).split("\n")] == ["Title", "", "First paragraph.", "", ""], \
        "settled blocks end with exactly one blank line"
    assert view.pending == "Second"
    view.add_content(" paragraph\x1b[2J")
    view.final = True
    assert plain(view).strip() == "Second paragraph\ufffd[2J"


def test_live_answer_shows_only_a_screenful_while_streaming():
    view = LiveAnswer()
    view.add_content("\n".join(f"- item {i}" for i in range(500)))
    console = Console(width=60, height=20, color_system=None)
    with console.capture() as captured:
        console.print(view)
    lines = captured.get().rstrip("\n").split("\n")
    assert len(lines) <= 18 and lines[-1].strip() == "• item 499"
    view.final = True
    with console.capture() as captured:
        console.print(view)
    assert captured.get().count("• item") == 500


def test_settled_block_trims_riches_own_blank_lines():
    assert [line.rstrip() for line in plain(SettledBlock("1. a\n2. b")).split("\n")] == [" 1 a", " 2 b", "", ""]


def test_models_table_shows_the_gpu_placement_only_when_there_is_one():
    from cli.render import admin_models_table, placements_from_status
    listing = served_listing(status("big", "ready", model="big.gguf"), status("small", "stopped", model="s.gguf"))
    gateway = GatewayStatus.model_validate({"scheduler": {"models": {
        "big": {"placement": {"gpus": [0, 1], "text": "gpu0+gpu1 split 4800:10560"}}, "small": {"placement": None}}}})
    text = plain(admin_models_table(listing, placements_from_status(gateway)), width=160)
    assert "gpu0+gpu1 split 4800:10560" in text and " gpu " in text
    cpu = plain(admin_models_table(listing, placements_from_status(GatewayStatus(scheduler=None))), width=160)
    assert " gpu " not in cpu


def test_models_table_shows_the_image_each_model_runs_and_which_name_their_own():
    from contract.listing import InstanceInfo
    from cli.render import admin_models_table
    stack = status("a", "ready", model="a.gguf").model_copy(update={"instance": InstanceInfo(
        id="0123456789ab", name="llamadock-model-a", state="running", image="llama:next")})
    own = status("b", "ready", model="b.gguf", image="llama:mine").model_copy(update={"instance": InstanceInfo(
        id="0123456789ac", name="llamadock-model-b", state="running", image="llama:mine")})
    text = plain(admin_models_table(served_listing(stack, own, status("c", "stopped", model="c.gguf"))), width=160)
    rows = {line.split()[1]: line for line in text.splitlines() if line.startswith("│")}
    assert "llama:next" in rows["a"] and "(own)" not in rows["a"]
    assert "llama:mine (own)" in rows["b"] and " - " in rows["c"]


def test_models_table_lists_the_gateways_other_models_with_where_they_come_from():
    from cli.render import admin_models_table
    from contract.status import ModelObject
    listing = served_listing(status("big", "ready", model="big.gguf"))
    others = [ModelObject(id="big"), ModelObject(id="mine", state="ready"),
              ModelObject(id="lmstudio:qwen", state="stopped", provider="lmstudio", aliases=["qwen"])]
    text = plain(admin_models_table(listing, {}, others), width=160)
    lines = {name: [line for line in text.splitlines() if f" {name} " in line] for name in ("big", "mine", "lmstudio:qwen")}
    assert len(lines["big"]) == 1  # declared: listed once, as the orchestrator has it
    lines = {name: found[0] for name, found in lines.items()}
    assert "upstreams file" in lines["mine"]
    assert "provider lmstudio" in lines["lmstudio:qwen"] and "qwen" in lines["lmstudio:qwen"]
