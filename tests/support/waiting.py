"""The one way tests wait for something: poll a condition until it holds, and fail naming what did
not happen. Sleeping a fixed time instead is either slow or flaky; every test polling its own way
made the timeouts and the failure messages differ for no reason."""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, what: str = "the condition", every: float = 0.05,
               detail: Callable[[], str] | None = None) -> T:
    """Call ``condition`` every ``every`` s until it returns something truthy, and return that.

    An exception from ``condition`` counts as not yet (a server may refuse connections while it
    starts) and is named in the failure. After ``timeout`` s: AssertionError naming ``what``,
    followed by ``detail()`` when given (a log, a terminal's screen: what shows why).
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise AssertionError(_timed_out(timeout, what, last_error, detail))
        time.sleep(every)


async def wait_until_async(condition: Callable[[], T | Awaitable[T]], timeout: float, what: str = "the condition",
                           every: float = 0.01, detail: Callable[[], str] | None = None) -> T:
    """``wait_until`` for a test on the event loop: sleeps with ``asyncio.sleep`` so the tasks it
    waits for run meanwhile; ``condition`` may be a plain function or a coroutine function."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
        except Exception as exc:
            last_error = exc
        if loop.time() >= deadline:
            raise AssertionError(_timed_out(timeout, what, last_error, detail))
        await asyncio.sleep(every)


def _timed_out(timeout: float, what: str, last_error: Exception | None, detail: Callable[[], str] | None) -> str:
    return (f"timed out after {timeout:g} s waiting for {what}"
            + (f" (last error: {last_error!r})" if last_error else "")
            + (f":\n{detail()}" if detail else ""))
