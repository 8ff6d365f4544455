"""config/chat.yaml: presets, default parameters and system prompt; a file that does not read
is not half-applied, and the chat says why."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.chat_config import ChatDefaults, load_chat_config, parse_chat_config
from cli.commands import SetSystem, completions, parse
from cli.params import Params
from cli.presets import SYSTEM_PRESETS

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "chat.example.yaml"


def test_the_example_reads_with_its_personas_and_defaults():
    defaults = parse_chat_config(EXAMPLE.read_text())
    assert {"helpful", "concise", "technical", "pirate", "cat"} <= set(defaults.presets)
    assert defaults.system == defaults.presets["helpful"] == SYSTEM_PRESETS["helpful"]
    assert defaults.params == Params(temperature=0.7) and defaults.problem is None
    assert "grumpy" in defaults.presets["cat"]


@pytest.mark.parametrize("text, presets, system, params", [
    ("", set(SYSTEM_PRESETS), "", Params()),
    ("system: pirate\n", set(SYSTEM_PRESETS), SYSTEM_PRESETS["pirate"], Params()),
    ("system: Pirate\n", set(SYSTEM_PRESETS), SYSTEM_PRESETS["pirate"], Params()),
    ("system: off\n", set(SYSTEM_PRESETS), "", Params()),
    ("system: You answer in haiku.\n", set(SYSTEM_PRESETS), "You answer in haiku.", Params()),
    ("presets: {owl: You are a wise owl.}\nsystem: owl\nparams: {temp: 0.1, max_tokens: 64}\n",
     {"owl"}, "You are a wise owl.", Params(temperature=0.1, max_tokens=64)),
])
def test_what_a_file_declares(text, presets, system, params):
    defaults = parse_chat_config(text)
    assert (set(defaults.presets), defaults.system, defaults.params) == (presets, system, params)


@pytest.mark.parametrize("text, words", [
    ("params: {temperature: 0.2}\nsystem: [unclosed\n", "line 3: not valid YAML (expected ','"),
    ("- a\n- b\n", "not a mapping"),
    ("colour: blue\n", "colour: Extra inputs are not permitted"),
    ("system: nosuchpreset\n", "system: no preset named 'nosuchpreset'"),
    ("params: {temperature: 9}\n", "params: temperature must be from 0 to 2, not 9"),
    ("params: {warmth: 1}\n", "params: Unknown parameter 'warmth'"),
    ("presets: {Big Cat: meow}\n", "'Big Cat' is not a preset name"),
    ("presets: {none: x}\n", "'none' is not a preset name"),
    ("presets: {cat: '  '}\n", "preset 'cat' is empty"),
])
def test_a_file_that_does_not_read_names_its_problem(tmp_path, text, words):
    path = tmp_path / "chat.yaml"
    path.write_text(text)
    defaults = load_chat_config(path)
    assert defaults.problem is not None and words in defaults.problem, defaults.problem
    assert defaults.problem.endswith("using the built-in presets and defaults.")
    assert (defaults.presets, defaults.system, defaults.params) == (SYSTEM_PRESETS, "", Params())


def test_no_file_is_the_built_in_defaults_without_a_word(tmp_path):
    assert load_chat_config(tmp_path / "missing.yaml") == ChatDefaults()


def test_the_files_presets_are_what_slash_system_knows():
    presets = parse_chat_config("presets: {owl: You are a wise owl.}\n").presets
    assert parse("/system owl", presets) == SetSystem("You are a wise owl.", "owl")
    assert "No preset named 'pirate': choose owl" in parse("/system pirate", presets).message
    assert completions("/system o", [], [], presets) == ["owl", "off"]
