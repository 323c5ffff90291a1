"""Saying a recurring problem once: an input that keeps failing must not fill
the daemon's log (and the disk) with the same lines every second."""

from __future__ import annotations

import logging
import time

REPEAT_SECONDS = 600.0
MAX_KEYS = 1024


class LogOnce:
    """Logs a problem the first time it happens under a key (a spool, a kind of
    request), then at most once every `every` seconds, with how often it
    happened in between."""

    def __init__(self, logger: logging.Logger, every: float = REPEAT_SECONDS):
        self.log = logger
        self.every = every
        self._seen: dict[str, tuple[float, int]] = {}  # key: (last logged, repeats since)

    def warning(self, key: str, msg: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        last, repeats = self._seen.get(key, (None, 0))
        if last is not None and now - last < self.every:
            self._seen[key] = (last, repeats + 1)
            return
        if repeats:
            msg += " (%d more like it in the last %.0f s, not logged)"
            args = (*args, repeats, now - (last or now))
        if len(self._seen) >= MAX_KEYS and key not in self._seen:
            self._seen.clear()
        self._seen[key] = (now, 0)
        self.log.warning(msg, *args, exc_info=exc_info)

    def forget(self, key: str) -> None:
        """The problem is over: say it again at once if it comes back."""
        self._seen.pop(key, None)
