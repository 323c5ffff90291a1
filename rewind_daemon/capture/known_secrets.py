"""The values of a session's secret variables, masked wherever they turn up later.

Redaction masks a variable named like a secret (`API_TOKEN`, `db_pass`) in
every stored environment, but `echo $API_TOKEN` prints its value, and a
command may hold it typed out. The daemon learns those values from each
environment it stores (the session's start and each step's end) and masks
them in the session's later commands and in its steps' output before either
is stored. The values live in the daemon's memory only: never on disk, not
even hashed. A daemon started again learns them again from the next
environment it ingests (every step's end record carries one).
"""

from __future__ import annotations

from collections import OrderedDict

from ..redact import MASK, Redactor

MIN_LENGTH = 6  # shorter values (`on`, `1`, `true`) would mask ordinary words
MAX_VALUES = 256  # per session: the newest kept
MAX_SESSIONS = 1024  # the sessions most recently heard of


class KnownSecrets:
    """Per session, the values its environments gave to secret variables."""

    def __init__(self) -> None:
        self._values: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()

    def learn(self, sid: str, env: dict[str, str], masked: dict[str, str]) -> None:
        """Take the values of `env` that redaction replaced by the mask in `masked`."""
        found = [
            v
            for name, v in env.items()
            if masked.get(name) == MASK and v != MASK and len(v) >= MIN_LENGTH and v.strip()
        ]
        if not found:
            return
        values = self._values.get(sid)
        if values is None:
            values = self._values[sid] = OrderedDict()
            if len(self._values) > MAX_SESSIONS:
                self._values.popitem(last=False)
        self._values.move_to_end(sid)
        for v in found:
            values[v] = None
            values.move_to_end(v)
        while len(values) > MAX_VALUES:
            values.popitem(last=False)

    def mask(self, sid: str, text: str, found: list[str] | None = None) -> tuple[str, int]:
        """`text` with the session's known values masked; how many were (the
        values masked are added to `found`)."""
        values = self._values.get(sid)
        if not values:
            return text, 0
        n = 0
        # The longest first: a value that holds another is masked whole.
        for v in sorted(values, key=len, reverse=True):
            k = text.count(v)
            if k:
                n += k
                text = text.replace(v, MASK)
                if found is not None:
                    found.append(v)
        return text, n

    def values(self, sid: str) -> tuple[str, ...]:
        """The session's values, oldest first (for restore, in an ingest worker)."""
        return tuple(self._values.get(sid) or ())

    def restore(self, sid: str, values: tuple[str, ...]) -> None:
        """Know the session's `values` (from values()) as they were learned."""
        self._values[sid] = OrderedDict.fromkeys(values)

    def redactor(self, sid: str, base: Redactor) -> Redactor:
        """`base`, which also masks the session's known values in text."""
        if not self._values.get(sid):
            return base
        return _SessionRedactor(base, self, sid)


class _SessionRedactor(Redactor):
    """A Redactor's text masking followed by the session's known values (it
    shares the base redactor's compiled rules: nothing is compiled again)."""

    def __init__(self, base: Redactor, known: KnownSecrets, sid: str):  # noqa: D107
        self.__dict__.update(base.__dict__)
        self._base, self._known, self._sid = base, known, sid

    def text(self, value: str, found: list[str] | None = None) -> tuple[str, int]:
        value, n = self._base.text(value, found)
        value, k = self._known.mask(self._sid, value, found)
        return value, n + k
