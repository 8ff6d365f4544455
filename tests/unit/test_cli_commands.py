"""What a typed chat line means: messages, every /command, and bad input."""

from __future__ import annotations

import pytest

from cli.commands import (Clear, Help, Invalid, ListModels, ListSessions, Load, Nothing, Quit, Save, Say, SetParams,
                          SetSystem, ShowParams, ShowSystem, Status, UseModel, completions, parse)
from cli.presets import SYSTEM_PRESETS


@pytest.mark.parametrize("line, expected", [
    ("hello", Say("hello")),
    ("  spaced out  ", Say("spaced out")),
    ("//etc/hosts is a file", Say("/etc/hosts is a file")),
    ("", Nothing()),
    ("   ", Nothing()),
    ("/models", ListModels()),
    ("/model", ListModels()),
    ("/model tiny-b", UseModel("tiny-b")),
    ("/MODEL  tiny-b ", UseModel("tiny-b")),
    ("/system", ShowSystem()),
    ("/system off", SetSystem("")),
    ("/system pirate", SetSystem(SYSTEM_PRESETS["pirate"], "pirate")),
    ("/system Concise", SetSystem(SYSTEM_PRESETS["concise"], "concise")),
    ("/system You are a poet.", SetSystem("You are a poet.")),
    ("/params", ShowParams()),
    ("/params reset", SetParams(reset=True)),
    ("/params temperature=0.2 top_p=0.9 max_tokens=256 repeat_penalty=1.1 seed=42",
     SetParams({"temperature": 0.2, "top_p": 0.9, "max_tokens": 256, "repeat_penalty": 1.1, "seed": 42})),
    ("/params temp=default", SetParams({"temperature": None})),
    ("/save", Save()),
    ("/save my-chat_1.v2", Save("my-chat_1.v2")),
    ("/load", Load()),
    ("/load my-chat", Load("my-chat")),
    ("/sessions", ListSessions()),
    ("/clear", Clear()),
    ("/status", Status()),
    ("/help", Help()),
    ("/?", Help()),
    ("/quit", Quit()),
    ("/exit", Quit()),
    ("/q", Quit()),
])
def test_parses(line, expected):
    assert parse(line) == expected


@pytest.mark.parametrize("line, says", [
    ("/frobnicate", "Unknown command /frobnicate"),
    ("/", "Unknown command /"),
    ("/etc/hosts", "start a line with // to send"),
    ("/clear now", "/clear takes no arguments"),
    ("/quit please", "/quit takes no arguments"),
    ("/model a b", "one model name"),
    ("/system helpfull", "No preset named 'helpfull'"),
    ("/params temperature", "name=value"),
    ("/params =3", "name=value"),
    ("/params temperature=hot", "temperature must be a number from 0 to 2, not 'hot'"),
    ("/params temperature=2.5", "temperature must be from 0 to 2, not 2.5"),
    ("/params max_tokens=0", "max_tokens must be from 1"),
    ("/params max_tokens=12.5", "max_tokens must be a whole number"),
    ("/params seed=-2", "seed must be from -1"),
    ("/params top_k=40", "Unknown parameter 'top_k'"),
    ("/params temperature=nan", "temperature must be from 0 to 2"),
    ("/save ../../etc/passwd", "not a valid session name"),
    ("/save a/b", "not a valid session name"),
    ("/load .hidden", "not a valid session name"),
    ("/load a..b", "not a valid session name"),
    ("/load two words", "no spaces"),
    ("/save " + "x" * 65, "not a valid session name"),
])
def test_refuses_with_a_sentence(line, says):
    result = parse(line)
    assert isinstance(result, Invalid)
    assert says in result.message
    assert result.message.endswith(".")
    assert "\n" not in result.message


def test_completes_commands_and_their_arguments():
    assert completions("/mo", [], []) == ["/model ", "/models"]
    assert completions("/model ti", ["tiny-a", "tiny-b", "big"], []) == ["tiny-a", "tiny-b"]
    assert completions("/system pi", [], []) == ["pirate"]
    assert completions("/load f", [], ["first", "second"]) == ["first"]
    assert completions("/params temperature=0.1 ma", [], []) == ["max_tokens="]
    assert completions("hello", ["tiny-a"], []) == []
