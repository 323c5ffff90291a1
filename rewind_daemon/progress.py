"""Progress of long work, shown on stderr while it runs.

Domain functions take a `Progress` callback, `progress(what, done, total)`,
and call it as they go (often: it is cheap); they never print. The CLI hands
them a `TerminalProgress`, which draws one line on stderr when stderr is a
terminal: what, how far (and of how many), how long it has taken or, with a
total, about how long is left. Quick work shows nothing (the line appears
after half a second); the line is redrawn ten times a second, also while
the work reports nothing, and cleared when the work ends. When stderr is
not a terminal it does nothing at all, so scripts and pipes see exactly
what they saw before.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Callable, TextIO

# progress(what, done=None, total=None): `done` items of `total` (None: unknown),
# or, with neither, just that `what` is going on.
Progress = Callable[..., None]


def no_progress(what: str, done: int | None = None, total: int | None = None) -> None:
    pass


class TerminalProgress:
    """The line on a terminal. A call only notes how far the work is (cheap
    enough for a loop); a thread of its own draws the latest state, so that
    work that reports nothing for a while still shows for how long it runs."""

    DELAY = 0.5  # seconds of work before anything is drawn
    INTERVAL = 0.1  # seconds between two redraws

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream if stream is not None else sys.stderr
        try:
            self.active = self.stream.isatty()
        except (AttributeError, ValueError, OSError):
            self.active = False
        self.started = time.monotonic()
        self.state: tuple[str, int | None, int | None] | None = None
        self.phase_started = self.started
        self.shown = False
        self.drawn = ""  # the text on the line now
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ticker: threading.Thread | None = None

    def __call__(self, what: str, done: int | None = None, total: int | None = None) -> None:
        if not self.active:
            return
        if self.state is None or self.state[0] != what:
            self.phase_started = time.monotonic()
        self.state = (what, done, total)
        if self.ticker is None:
            with self.lock:
                if self.ticker is None:
                    self.stop.clear()
                    self.ticker = threading.Thread(
                        target=self._tick, daemon=True, name="rw-progress"
                    )
                    self.ticker.start()

    def _tick(self) -> None:
        wait = max(self.started + self.DELAY - time.monotonic(), 0.0)
        while not self.stop.wait(wait):
            wait = self.INTERVAL
            with self.lock:
                state = self.state
                if state is not None and not self.stop.is_set():
                    text = self._text(*state, time.monotonic() - self.phase_started)
                    if text != self.drawn:
                        self._draw(text)

    @staticmethod
    def _text(what: str, done: int | None, total: int | None, elapsed: float) -> str:
        if done is None:
            return f"{what} ({_duration(elapsed)})"
        if not total:
            return f"{what}: {done:,} ({_duration(elapsed)})"
        done = min(done, total)
        text = f"{what}: {done:,}/{total:,} ({done * 100 // total}%)"
        if done and elapsed >= 1:
            return text + f", about {_duration(elapsed * (total - done) / done)} left"
        return text

    def _draw(self, text: str) -> None:
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns or 80
        except (AttributeError, ValueError, OSError):
            width = 80  # (a terminal that does not say)
        try:
            self.stream.write("\r" + text[: max(width - 1, 1)] + "\x1b[K")
            self.stream.flush()
            self.shown, self.drawn = True, text
        except (OSError, ValueError):
            self.active = False  # the terminal went away: the work goes on regardless
            self.stop.set()

    def close(self) -> None:
        """Stop drawing and clear the line (the work, or this part of it, is done)."""
        ticker = self.ticker
        if ticker is not None:
            self.stop.set()
            ticker.join()
            self.ticker = None
        self.state = None
        with self.lock:
            if self.shown and self.active:
                try:
                    self.stream.write("\r\x1b[K")
                    self.stream.flush()
                except (OSError, ValueError):
                    pass
            self.shown, self.drawn = False, ""

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def waiting(self, what: str) -> Iterator[None]:
        """For work that reports nothing as it goes (another process's): say
        what is going on, and for how long, while the block runs."""
        self(what)
        yield


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}:{seconds:02d}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"
