"""What the shells' TAB completion offers for sessions and steps: read from the
store as it is (no daemon, no sync, nothing written), since it runs while the
user waits at TAB."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from ..display import escaped
from ..errors import RwError
from ..store import Store
from ..timeline.history import resolve

SPECIAL = (("current", "this shell's session"), ("last", "the last session recorded here"))
RECENT_IDS = 20  # ids offered before anything is typed
MAX_STEPS = 200  # step numbers offered at most (the most recent that match)
# Names offered: what a shell can take as one word without quoting. (Others can
# be typed; completion would insert them wrongly, or drive the terminal.)
_PLAIN = re.compile(r"[A-Za-z0-9_.,+@%/=-][A-Za-z0-9_.,+@%/=:-]*")


@dataclass(frozen=True)
class Candidate:
    value: str
    help: str = ""


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def sessions(store: Store | None, incomplete: str) -> list[Candidate]:
    """Names (newest first), `current` and `last`, and ids: those that start
    with `incomplete`; before anything is typed, only the recent ids."""
    out = [Candidate(v, h) for v, h in SPECIAL if v.startswith(incomplete)]
    if store is None:
        return out
    rows = store.sessions()
    seen = {c.value for c in out}
    for r in rows:
        name = r.name or ""
        if name.startswith(incomplete) and _PLAIN.fullmatch(name) and name not in seen:
            seen.add(name)
            out.append(Candidate(name, escaped(f"{r.origin} {r.shell or ''} session {r.id}")))
    ids = [r for r in rows if r.id.startswith(incomplete)]
    for r in ids if incomplete else ids[:RECENT_IDS]:
        label = f"{r.name} " if r.name else ""
        text = f"{label}{r.origin}, {_when(r.started_at)}, {r.steps} steps"
        out.append(Candidate(r.id, escaped(text)))
    return out


def steps(store: Store | None, ref: str | None, incomplete: str) -> list[Candidate]:
    """The step numbers of session `ref` (None: this shell's, else the last) that
    start with `incomplete`, the most recent last, each with its command."""
    if store is None or (incomplete and not incomplete.isdigit()):
        return []
    try:
        sid = resolve(store, ref).id
    except RwError:
        return []
    rows = [r for r in store.steps(sid) if str(r.number).startswith(incomplete)]
    return [
        Candidate(str(r.number), escaped(r.command.split("\n", 1)[0][:80]))
        for r in rows[-MAX_STEPS:]
    ]
