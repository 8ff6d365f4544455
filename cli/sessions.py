"""Chat sessions: the conversation, its JSON form, and the directory they are saved in.

A session file is ``<dir>/<name>.json``, with a Markdown transcript ``<name>.md`` beside it; names are checked so that no name can point
outside the directory. Writes are atomic (temporary file, then rename), so a crash
never leaves half a session. Any file that cannot be read becomes one sentence.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from common.files import atomic_write

from .params import Params, ParamsError, params_from_mapping

FORMAT = "llamadock-chat-session"
VERSION = 1
NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
ROLES = ("system", "user", "assistant")


class SessionError(Exception):
    pass


@dataclass
class Session:
    model: str
    system: str = ""
    params: Params = field(default_factory=Params)
    messages: list[dict[str, str]] = field(default_factory=list)
    name: str | None = None

    def request_messages(self, start: int = 0) -> list[dict[str, str]]:
        """What a request sends: the system prompt, then the messages from ``start`` (the older ones
        left out to fit the model's context, cli/trimming.py)."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.messages[start:]


@dataclass(frozen=True)
class SessionSummary:
    name: str
    model: str = ""
    message_count: int = 0
    saved_at: datetime | None = None
    problem: str | None = None


def validate_name(name: str) -> str:
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise SessionError(f"'{name}' is not a valid session name: use up to 64 letters, digits, '.', '_' "
                           "or '-', not starting with '.' and without '..'.")
    return name


def new_name(now: datetime) -> str:
    return now.strftime("chat-%Y%m%d-%H%M%S")


def to_json(session: Session, saved_at: datetime) -> str:
    return json.dumps({
        "format": FORMAT,
        "version": VERSION,
        "saved_at": saved_at.astimezone(timezone.utc).isoformat(timespec="seconds"),
        "model": session.model,
        "system": session.system,
        "params": session.params.body(),
        "messages": session.messages,
    }, ensure_ascii=False, indent=2) + "\n"


ROLE_HEADINGS = {"system": "System prompt", "user": "You", "assistant": "Assistant"}


def to_markdown(session: Session, saved_at: datetime, name: str) -> str:
    """The conversation for people: a heading per message, its text as written (answers are
    Markdown already). Written beside the JSON by /save; never read back."""
    lines = [f"# {name}", "",
             f"Chat with **{session.model}**, saved {saved_at.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC.", ""]
    params = session.params.body()
    if params:
        lines += ["Parameters: " + ", ".join(f"`{k}={v}`" for k, v in params.items()), ""]
    messages = ([{"role": "system", "content": session.system}] if session.system else []) + session.messages
    for message in messages:
        lines += [f"## {ROLE_HEADINGS[message['role']]}", "", message["content"].rstrip(), ""]
    return "\n".join(lines)


def from_json(text: str, name: str | None = None) -> tuple[Session, datetime | None]:
    """The session in ``text`` and when it was saved; SessionError saying what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SessionError(f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SessionError("not a llamadock chat session")
    if data.get("version") != VERSION:
        raise SessionError(f"saved by another version (format version {data.get('version')!r})")
    model, system, messages = data.get("model"), data.get("system", ""), data.get("messages")
    if not isinstance(model, str) or not model:
        raise SessionError("no model named")
    if not isinstance(system, str):
        raise SessionError("the system prompt is not text")
    if not isinstance(messages, list) or not all(_is_message(m) for m in messages):
        raise SessionError("the messages are not a list of {role, content} entries")
    try:
        params = params_from_mapping(data.get("params"))
    except ParamsError as exc:
        raise SessionError(f"bad params: {str(exc).rstrip('.')}") from None
    session = Session(model=model, system=system, params=params,
                      messages=[{"role": m["role"], "content": m["content"]} for m in messages], name=name)
    return session, _parse_time(data.get("saved_at"))


def _is_message(message: object) -> bool:
    return (isinstance(message, dict) and message.get("role") in ROLES
            and isinstance(message.get("content"), str))


def _parse_time(text: object) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return parsed.replace(tzinfo=timezone.utc) if parsed and parsed.tzinfo is None else parsed


class SessionStore:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        return self.directory / f"{validate_name(name)}.json"

    def save(self, session: Session, name: str, now: datetime) -> Path:
        """The session as JSON (what /load reads) and, beside it, as a Markdown transcript."""
        target = self.path(name)
        try:
            atomic_write(target, to_json(session, now))  # 0o644: files the cli container writes stay yours
            atomic_write(self.transcript_path(name), to_markdown(session, now, name))
        except OSError as exc:
            raise SessionError(f"Cannot save the session to {target}: {exc.strerror or exc}.") from None
        return target

    def transcript_path(self, name: str) -> Path:
        return self.directory / f"{validate_name(name)}.md"

    def load(self, name: str) -> tuple[Session, datetime | None]:
        target = self.path(name)
        try:
            text = target.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SessionError(f"There is no session named '{name}': /sessions lists them.") from None
        except UnicodeDecodeError:
            raise SessionError(f"The session file {target} is damaged (not UTF-8 text) and was not loaded.") from None
        except OSError as exc:
            raise SessionError(f"Cannot read the session file {target}: {exc.strerror or exc}.") from None
        try:
            return from_json(text, name)
        except SessionError as exc:
            raise SessionError(f"The session file {target} is damaged ({exc}) and was not loaded.") from None

    def summaries(self) -> list[SessionSummary]:
        """Every saved session, newest first; unreadable ones are listed with their problem."""
        if not self.directory.is_dir():
            return []
        found: list[SessionSummary] = []
        for path in self.directory.glob("*.json"):
            name = path.stem
            if not NAME_RE.fullmatch(name) or ".." in name:
                continue
            try:
                session, saved_at = from_json(path.read_text(encoding="utf-8"), name)
            except (SessionError, UnicodeDecodeError, OSError) as exc:
                problem = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
                found.append(SessionSummary(name, saved_at=_mtime(path), problem=problem))
                continue
            found.append(SessionSummary(name, session.model, len(session.messages), saved_at or _mtime(path)))
        epoch = datetime.min.replace(tzinfo=timezone.utc)
        return sorted(found, key=lambda s: s.saved_at or epoch, reverse=True)

    def latest_name(self) -> str | None:
        readable = [s for s in self.summaries() if s.problem is None]
        return readable[0].name if readable else None


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    except OSError:
        return None


def default_directory() -> Path:
    """``LLAMADOCK_SESSIONS_DIR``, else ``logs/sessions`` (the cli container's /app/logs volume)."""
    return Path(os.environ.get("LLAMADOCK_SESSIONS_DIR") or "logs/sessions")
