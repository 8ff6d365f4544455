"""Saved chat sessions: round trip, names that could escape the directory, damaged files."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from cli.params import Params, ParamsError, params_from_mapping
from cli.sessions import Session, SessionError, SessionStore, from_json, new_name, to_json, validate_name

NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def a_session() -> Session:
    return Session(model="tiny-a", system="Be brief.", params=Params(temperature=0.2, max_tokens=256, seed=42),
                   messages=[{"role": "user", "content": "Hi \u2028 there ✓"},
                             {"role": "assistant", "content": "Hello!\n```py\nprint(1)\n```"}])


def test_round_trip_through_the_store(tmp_path):
    store = SessionStore(tmp_path / "sessions")
    path = store.save(a_session(), "first", NOW)
    assert path == tmp_path / "sessions" / "first.json"
    loaded, saved_at = store.load("first")
    original = a_session()
    assert (loaded.model, loaded.system, loaded.params, loaded.messages) == \
        (original.model, original.system, original.params, original.messages)
    assert loaded.name == "first" and saved_at == NOW
    assert sorted(p.name for p in path.parent.iterdir()) == ["first.json", "first.md"], \
        "the transcript beside it, and no temporary file left behind"


def test_saving_again_replaces_the_file_whole(tmp_path):
    store = SessionStore(tmp_path)
    store.save(a_session(), "s", NOW)
    shorter = a_session()
    shorter.messages = shorter.messages[:1]
    store.save(shorter, "s", NOW)
    assert len(store.load("s")[0].messages) == 1
    assert json.loads((tmp_path / "s.json").read_text())["messages"] == shorter.messages


def test_request_messages_put_the_system_prompt_first():
    session = a_session()
    assert session.request_messages()[0] == {"role": "system", "content": "Be brief."}
    session.system = ""
    assert session.request_messages() == session.messages


@pytest.mark.parametrize("name", ["a", "chat-20250304-050607", "My_Chat.v2", "9", "x" * 64])
def test_accepts_plain_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "..", "../x", "a/../b", "a/b", "/etc/passwd", ".hidden", "a..b", "x" * 65,
                                  "with space", "tab\t", "semi;colon", "ünïcode", "nul\0", "back\\slash", "~root"])
def test_refuses_names_that_could_escape_or_surprise(name):
    with pytest.raises(SessionError, match="not a valid session name"):
        validate_name(name)


def test_the_store_refuses_bad_names_before_touching_the_disk(tmp_path):
    store = SessionStore(tmp_path / "sessions")
    with pytest.raises(SessionError):
        store.save(a_session(), "../escape", NOW)
    with pytest.raises(SessionError):
        store.load("../../etc/passwd")
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "sessions").exists()


@pytest.mark.parametrize("content, problem", [
    ("{ not json", "not valid JSON (line 1"),
    ("[]", "not a llamadock chat session"),
    ('{"format": "llamadock-chat-session", "version": 99}', "saved by another version"),
    ('{"format": "llamadock-chat-session", "version": 1, "messages": []}', "no model named"),
    ('{"format": "llamadock-chat-session", "version": 1, "model": "m", "messages": [{"role": "robot"}]}',
     "the messages are not a list"),
    ('{"format": "llamadock-chat-session", "version": 1, "model": "m", "messages": [], '
     '"params": {"temperature": 9}}', "bad params: temperature must be from 0 to 2"),
])
def test_a_damaged_file_is_reported_in_one_sentence(tmp_path, content, problem):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(SessionError) as raised:
        SessionStore(tmp_path).load("bad")
    message = str(raised.value)
    assert problem in message
    assert message.startswith(f"The session file {tmp_path / 'bad.json'} is damaged")
    assert message.endswith("and was not loaded.") and "\n" not in message


def test_a_file_that_is_not_text_is_reported(tmp_path):
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SessionError, match="damaged \\(not UTF-8 text\\)"):
        SessionStore(tmp_path).load("bin")


def test_a_missing_session_says_where_to_look(tmp_path):
    with pytest.raises(SessionError, match="There is no session named 'nope': /sessions lists them."):
        SessionStore(tmp_path).load("nope")


def test_listing_is_newest_first_and_shows_damaged_files(tmp_path):
    store = SessionStore(tmp_path)
    store.save(a_session(), "older", NOW)
    store.save(Session(model="tiny-b"), "newer", NOW.replace(year=2026))
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "notes.txt").write_text("not a session")
    summaries = store.summaries()
    assert [s.name for s in summaries if not s.problem] == ["newer", "older"]
    assert [(s.model, s.message_count) for s in summaries if not s.problem] == [("tiny-b", 0), ("tiny-a", 2)]
    broken = next(s for s in summaries if s.name == "broken")
    assert broken.problem.startswith("not valid JSON")
    assert store.latest_name() == "newer"


def test_listing_an_absent_directory_is_empty(tmp_path):
    assert SessionStore(tmp_path / "none").summaries() == []
    assert SessionStore(tmp_path / "none").latest_name() is None


def test_an_unwritable_directory_is_one_sentence(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SessionError, match=r"^Cannot save the session to .*file/s\.json: .*\.$"):
        SessionStore(blocker).save(a_session(), "s", NOW)


def test_json_form_is_readable_and_versioned():
    data = json.loads(to_json(a_session(), NOW))
    assert data["format"] == "llamadock-chat-session" and data["version"] == 1
    assert data["saved_at"] == "2025-03-04T05:06:07+00:00"
    assert data["params"] == {"temperature": 0.2, "max_tokens": 256, "seed": 42}, "unset params are not saved"
    assert "Hi \u2028 there ✓" in to_json(a_session(), NOW), "text is kept as written, not escaped"
    session, _ = from_json(to_json(a_session(), NOW))
    assert session.params == a_session().params


def test_saved_params_are_validated_like_typed_ones():
    assert params_from_mapping({"temperature": 0.5, "seed": 7}) == Params(temperature=0.5, seed=7)
    assert params_from_mapping(None) == Params()
    for bad in ({"seed": 1.5}, {"top_k": 3}, {"max_tokens": True}, "nope"):
        with pytest.raises(ParamsError):
            params_from_mapping(bad)


def test_new_names_are_valid():
    assert validate_name(new_name(NOW)) == "chat-20250304-050607"


def test_save_writes_a_readable_markdown_transcript_beside_the_json(tmp_path):
    store = SessionStore(tmp_path)
    store.save(a_session(), "first", NOW)
    text = (tmp_path / "first.md").read_text(encoding="utf-8")
    assert text.startswith("# first\n\nChat with **tiny-a**, saved ")
    assert "Parameters: `temperature=0.2`, `max_tokens=256`, `seed=42`" in text
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## System prompt", "## You", "## Assistant"]
    assert "Hello!\n```py\nprint(1)\n```" in text  # an answer's Markdown as it was written
    assert [s.name for s in store.summaries()] == ["first"]  # the transcript is not a session
