"""``llamadock chat``: the interactive loop, a thin layer of I/O around the pure pieces
(commands, params, sessions, the SSE stream, rendering)."""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from typing import Callable, Iterator

from rich.console import Console
from rich.live import Live
from rich.text import Text

from contract.status import GatewayStatus, ModelList

from .api import Api, CallFailed
from .chat_config import ChatDefaults, default_path, load_chat_config
from .context import TokenCounter, byte_bound, context_window
from .commands import (Clear, Command, Help, Invalid, ListModels, ListSessions, Load, Nothing, Quit, Save, Say,
                       SetParams, SetSystem, ShowParams, ShowSystem, Status, UseModel, completions, parse)
from .line_input import LineInput, prompt_text
from .live_answer import LiveAnswer
from .model_list import ModelInfo, find_model, models_from_listing, only_ready_model, pick_model
from .render import help_table, models_table, params_table, sessions_table, stats_line, status_view, system_text
from .sessions import Session, SessionError, SessionStore, default_directory, new_name
from .sse import SseComment, SseEvent, SseParser
from .stream import Answer, Content, Progress, Reasoning, chat_events, completion_request
from .trimming import explain_context_error, reply_reserve, trim, trim_note
from .waiting import Waiting

REFRESH_S = 0.1  # the live Markdown is redrawn at most this often, not once per token
LEAVE = object()


class Chat:
    def __init__(self, api: Api, console: Console, store: SessionStore, line_input: LineInput,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 defaults: ChatDefaults | None = None) -> None:
        self.api, self.console, self.store, self.input = api, console, store, line_input
        self.clock, self.now = clock, now
        self.defaults = defaults or ChatDefaults()
        self.session = Session(model="", system=self.defaults.system, params=self.defaults.params)
        # The first message still sent: the ones before were left out to fit the model's context
        # (they stay in the session, and in what /save writes).
        self.sent_from = 0
        self.windows: dict[str, int | None] = {}  # model -> tokens one request may hold
        self.tokens = TokenCounter(api)
        self.models: list[ModelInfo] = []
        self.unsaved = False
        self.asked_to_confirm_leaving = False
        self.color = console.is_terminal and not console.no_color

    # --- starting -----------------------------------------------------------------

    def refresh_models(self) -> list[ModelInfo]:
        self.models = models_from_listing(self.api.get(ModelList, "GET", "/v1/models").data)
        return self.models

    def choose_model(self, requested: str | None) -> bool:
        models = self.refresh_models()
        if not models:
            self.error("The gateway serves no model yet: add one with `make add NAME=… MODEL=…`.")
            return False
        if requested:
            found = find_model(models, requested)
            if found:
                return self.use(found)
            self.error(f"The model '{requested}' does not exist. Available models: "
                       f"{', '.join(m.name for m in models)}.")
        elif only := only_ready_model(models):
            return self.use(only)
        return self.pick(models)

    def pick(self, models: list[ModelInfo]) -> bool:
        self.console.print(models_table(models, numbered=True))
        while True:
            try:
                answer = self.input.read(prompt_text("Pick a model (number or name)", "1;33", self.color))
            except (KeyboardInterrupt, EOFError):
                self.console.print()
                return False
            choice = pick_model(models, answer)
            if isinstance(choice, ModelInfo):
                return self.use(choice)
            self.console.print(Text(choice, style="yellow"))

    def use(self, model: ModelInfo) -> bool:
        first = not self.session.model
        if not first and model.name != self.session.model:
            self.unsaved = True
            self.sent_from = 0  # another context: it may hold more
        self.session.model = model.name
        hints = " · /help lists the commands · Ctrl-C stops an answer · /quit leaves" if first else ""
        self.console.print(Text.assemble("Chatting with ", (model.name, "bold cyan"), (hints, "dim")))
        if not model.ready:
            self.console.print(Text(f"{model.name} is {model.state}"
                                    f"{': ' + model.reason if model.reason else ''}; "
                                    "it answers once it is ready.", style="yellow"))
        return True

    # --- the loop -----------------------------------------------------------------

    def loop(self) -> int:
        if self.input.history_problem:
            self.console.print(Text(self.input.history_problem, style="dim"))
        if self.defaults.problem:
            self.console.print(Text(self.defaults.problem, style="yellow"))
        while True:
            try:
                line = self.input.read_message(prompt_text(self.session.model, color=self.color),
                                               prompt_text(" " * max(len(self.session.model) - 1, 0) + "…",
                                                           "2", self.color))
            except KeyboardInterrupt:
                self.console.print()
                if self.asked_to_confirm_leaving:
                    return self.leave()
                self.asked_to_confirm_leaving = True
                self.console.print(Text("Press Ctrl-C again or type /quit to leave.", style="dim"))
                continue
            except EOFError:
                self.console.print()
                return self.leave()
            self.asked_to_confirm_leaving = False
            try:
                if self.execute(parse(line, self.defaults.presets)) is LEAVE:
                    return self.leave()
            except KeyboardInterrupt:
                self.console.print(Text("Cancelled.", style="dim"))
            except (CallFailed, SessionError) as exc:
                self.error(str(exc))

    def execute(self, command: Command) -> object:
        match command:
            case Nothing():
                pass
            case Invalid(message):
                self.console.print(Text(message, style="yellow"))
            case Say(text):
                self.send(text)
            case Quit():
                return LEAVE
            case Help():
                self.console.print(help_table(self.defaults.presets))
            case ListModels():
                self.console.print(models_table(self.refresh_models(), self.session.model))
            case UseModel(name):
                found = find_model(self.refresh_models(), name)
                if found is None:
                    self.error(f"The model '{name}' does not exist. Available models: "
                               f"{', '.join(m.name for m in self.models) or 'none'}.")
                else:
                    self.use(found)
            case ShowSystem():
                self.console.print(system_text(self.session.system, self.defaults.presets))
            case SetSystem(text, preset):
                self.session.system, self.unsaved = text, True
                self.console.print(f"System prompt set to the {preset} preset." if preset
                                   else "System prompt set." if text else "System prompt removed.")
            case ShowParams():
                self.console.print(params_table(self.session.params))
            case SetParams(changes, reset):
                self.session.params = self.defaults.params if reset else self.session.params.updated(changes)
                self.unsaved = True
                self.console.print(params_table(self.session.params))
            case Save(name):
                self.save(name)
            case Load(name):
                self.load(name)
            case ListSessions():
                summaries = self.store.summaries()
                self.console.print(sessions_table(summaries) if summaries
                                   else f"No saved sessions yet in {self.store.directory}.")
            case Clear():
                self.session.messages, self.unsaved, self.sent_from = [], True, 0
                self.console.print("Conversation cleared (the system prompt and params stay).")
            case Status():
                self.console.print(status_view(self.api.get(GatewayStatus, "GET", "/status"), self.session.model))
        return None

    # --- answers ------------------------------------------------------------------

    def send(self, text: str) -> None:
        self.session.messages.append({"role": "user", "content": text})
        self.unsaved = True
        self.fit_context()
        answer = self.stream_answer()
        if answer.chunks and not self.console.is_terminal:
            self.console.line()  # rich's Live ends the answer's last line itself only on a terminal
        if answer.text:
            self.session.messages.append({"role": "assistant", "content": answer.text})
        else:
            self.session.messages.pop()  # no answer, no turn: the question can simply be sent again
        if answer.chunks or answer.stopped or answer.usage:
            self.console.print(Text(stats_line(answer.stats()), style="dim"))
        if answer.error:
            explained = explain_context_error(answer.error, self.windows.get(self.session.model))
            if explained:
                self.error(explained)
            else:
                self.error(f"The answer broke off: {answer.error}" if answer.chunks else answer.error)

    def window(self) -> int | None:
        model = self.session.model
        if self.windows.get(model) is None:
            self.windows[model] = context_window(self.api, model)
        return self.windows[model]

    def fit_context(self) -> None:
        """Leave the oldest turns out of the request when the conversation outgrows the model's
        context, and say so. Counted by the byte bound first: the tokenizer is asked only when
        that says it may not fit."""
        window = self.window()
        if not window:
            return
        budget = window - reply_reserve(window, self.session.params.max_tokens)
        pending = self.session.messages[self.sent_from:]
        system = {"role": "system", "content": self.session.system}
        if not trim(pending, byte_bound(system) if self.session.system else 0, byte_bound, budget).dropped_turns:
            return
        model = self.session.model
        result = trim(pending, self.tokens.exact(model, system) if self.session.system else 0,
                      lambda message: self.tokens.exact(model, message), budget)
        if result.dropped_turns:
            self.sent_from += result.dropped_messages
            self.console.print(Text(trim_note(result, window), style="yellow"))

    def stream_answer(self) -> Answer:
        answer = Answer(started_at=self.clock())
        view = LiveAnswer()
        waiting = Waiting(self.session.model, answer.started_at, self.clock)
        try:
            with ExitStack() as stack:
                # Until the first token: a spinner saying what the request waits for (a transient
                # Live that refreshes itself, so it turns while no byte arrives).
                spinner = stack.enter_context(Live(waiting, console=self.console, transient=True,
                                                   refresh_per_second=10))
                chunks = iter(stack.enter_context(
                    self.api.stream_post("/v1/chat/completions", completion_request(self.session, self.sent_from))))
                parser = SseParser()
                for chunk in chunks:
                    self.apply_events(parser.feed(chunk), answer, view, self.clock(), waiting)
                    if answer.chunks or answer.error:
                        break
                spinner.stop()
                with Live(view, console=self.console, auto_refresh=False) as live:
                    try:
                        self.follow(chunks, parser, answer, view, live)
                    finally:
                        view.final = True  # the Live's last refresh shows the whole answer
        except KeyboardInterrupt:
            answer.stop(self.clock())  # leaving the blocks above closed the connection
        except CallFailed as exc:
            answer.error = str(exc)
        answer.end(self.clock())
        return answer

    def follow(self, chunks: Iterator[bytes], parser: SseParser, answer: Answer, view: LiveAnswer,
               live: Live) -> None:
        last_refresh = 0.0
        for chunk in chunks:
            now = self.clock()
            self.apply_events(parser.feed(chunk), answer, view, now)
            if now - last_refresh >= REFRESH_S:
                for block in view.take_settled():
                    live.console.print(block)
                live.refresh()
                last_refresh = now
        self.apply_events(parser.close(), answer, view, self.clock())

    @staticmethod
    def apply_events(events: list[SseEvent | SseComment], answer: Answer, view: LiveAnswer, now: float,
                     waiting: Waiting | None = None) -> None:
        for sse in events:
            for event in chat_events(sse):
                answer.apply(event, now)
                if isinstance(event, Content):
                    view.add_content(event.text)
                elif isinstance(event, Reasoning):
                    view.add_reasoning(event.text)
                elif isinstance(event, Progress) and waiting is not None:
                    waiting.note = event.text

    # --- sessions -----------------------------------------------------------------

    def save(self, name: str | None) -> None:
        name = name or self.session.name or new_name(self.now().astimezone())
        path = self.store.save(self.session, name, self.now())
        self.session.name, self.unsaved = name, False
        self.console.print(f"Saved session '{name}' ({len(self.session.messages)} messages) to {path}, "
                           f"and a Markdown transcript beside it ({path.with_suffix('.md').name}).")

    def load(self, name: str | None) -> None:
        name = name or self.store.latest_name()
        if name is None:
            self.console.print(f"No saved sessions yet in {self.store.directory}.")
            return
        session, saved_at = self.store.load(name)
        if self.unsaved and self.session.messages:
            self.save(None)  # keep the conversation being replaced
        wanted = session.model
        found = find_model(self.refresh_models(), wanted)
        session.model = found.name if found else self.session.model
        self.session, self.unsaved, self.sent_from = session, bool(found is None), 0
        when = f", saved {saved_at.astimezone():%Y-%m-%d %H:%M}" if saved_at else ""
        self.console.print(f"Loaded session '{name}': {len(session.messages)} messages with {wanted}{when}.")
        if found is None:
            self.console.print(Text(f"The gateway does not serve '{wanted}' now: continuing with "
                                    f"{session.model}.", style="yellow"))

    def leave(self) -> int:
        if self.session.messages and self.unsaved:
            try:
                self.save(None)
            except SessionError as exc:
                self.error(str(exc))
                return 1
        return 0

    def error(self, message: str) -> None:
        self.console.print(Text(message, style="red"))


def cmd_chat(api: Api, console: Console, args: argparse.Namespace) -> int:
    store = SessionStore(default_directory())
    chat: Chat

    def complete(line: str) -> list[str]:
        return completions(line, [m.name for m in chat.models], [s.name for s in store.summaries()],
                           chat.defaults.presets)

    line_input = LineInput(store.directory.parent / ".chat_history", complete)
    chat = Chat(api, console, store, line_input, defaults=load_chat_config(default_path()))
    if not chat.choose_model(args.model):
        return 1
    return chat.loop()
