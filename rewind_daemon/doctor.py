"""Health checks for `rw doctor`."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from dataclasses import dataclass

from . import client
from .config import load
from .errors import RwError
from .history import current_session_id
from .ingest import SPOOL_SUFFIX, space_problem
from .paths import Paths, session_file
from .store import SCHEMA_VERSION, Store


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def to_json(self) -> dict:
        return {"check": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def spool_backlog(paths: Paths, store: Store | None) -> tuple[int, int]:
    """(files, bytes) recorded by shells but not yet ingested."""
    files = total = 0
    try:
        entries = list(paths.spool_dir.iterdir())
    except FileNotFoundError:
        return 0, 0
    for p in entries:
        if not p.name.endswith(SPOOL_SUFFIX):
            continue
        try:
            size = p.stat().st_size
        except FileNotFoundError:
            continue
        done = store.spool_offset(p.name) if store else 0
        if size > done:
            files += 1
            total += size - done
    return files, total


def run_checks(paths: Paths) -> list[Check]:
    checks: list[Check] = []
    try:
        load(paths.config_file)
        checks.append(Check("config", True, str(paths.config_file)))
    except RwError as e:
        checks.append(Check("config", False, str(e), "fix the file; rw config path shows it"))

    reply = client.ping(paths)
    if reply:
        try:
            client.request(paths, "sync")
        except RwError:
            pass
        checks.append(Check("daemon", True, f"pid {reply['pid']}, version {reply['version']}"))
    elif client.stopped_on_purpose(paths):
        checks.append(
            Check("daemon", False, "stopped on purpose (rw daemon start); shells keep spooling",
                  "run: rw daemon start")
        )  # fmt: skip
    else:
        checks.append(
            Check("daemon", False, f"not reachable at {paths.socket}", "run: rw daemon start")
        )

    checks.append(_runtime_dir(paths))

    store: Store | None = None
    try:
        store = Store.open_for_reading(paths.db)
    except RwError as e:
        checks.append(Check("store", False, str(e), f"move {paths.db} aside and restart"))
    problems = store.integrity() if store is not None else []
    if store is not None and problems:
        checks.append(
            Check("store", False, f"{paths.db}: " + "; ".join(problems[:3]),
                  f"move {paths.db} aside; rw starts a new store (spooled commands are kept)")
        )  # fmt: skip
        store.close()
        store = None
    elif store is not None:
        checks.append(
            Check("store", True, f"{paths.db}: schema {SCHEMA_VERSION}, {store.step_count()} steps")
        )
    elif not paths.db.exists():
        checks.append(Check("store", True, f"{paths.db} (nothing recorded yet)"))

    sid = current_session_id()
    if not sid:
        checks.append(
            Check(
                "hooks",
                False,
                "this shell is not recorded (RW_SESSION is not set)",
                'add to your shell rc: eval "$(rw init bash)"  (or zsh)',
            )
        )
    else:
        recorded = store is not None and store.get_session(sid) is not None
        spool = session_file(paths.spool_dir, sid, SPOOL_SUFFIX)
        spooled = spool is not None and spool.exists()
        checks.append(
            Check(
                "hooks",
                recorded or spooled,
                f"session {sid}" + ("" if recorded else " (not ingested yet)"),
                "" if recorded or spooled else f"the spool dir {paths.spool_dir} is not writable",
            )
        )

    files, size = spool_backlog(paths, store)
    checks.append(
        Check(
            "spool backlog",
            size == 0 or reply is not None,
            f"{size} bytes in {files} spool file(s) waiting" if size else "empty",
            "" if size == 0 or reply else "start the daemon to ingest them: rw daemon start",
        )
    )
    checks.append(_recording(paths, store, reply is not None))
    redactions = store.counter("redactions") if store else 0
    checks.append(Check("redactions", True, f"{redactions} secret(s) redacted so far"))
    if store is not None:
        checks.append(_checkpoint_objects(paths, store))
        checks.append(_restore_leftovers(paths, store))
        checks.append(_step_confirmations(paths, store, sid))
        store.close()
    return checks


def _restore_leftovers(paths: Paths, store: Store) -> Check:
    """Temporary copies that killed restores left in watched trees, removed."""
    from .checkpoints import Checkpoints, watches
    from .snapshot import sweep_leftovers

    try:
        config = load(paths.config_file)
        own = Checkpoints(paths, store, config).own_dirs()
        swept = [p for w in watches(store, config) for p in sweep_leftovers(w.path, own)]
    except (RwError, sqlite3.Error):
        return Check("restore leftovers", True, "not looked for (see the checks above)")
    if not swept:
        return Check("restore leftovers", True, "none in the watched trees")
    more = f" (and {len(swept) - 3} more)" if len(swept) > 3 else ""
    return Check(
        "restore leftovers",
        True,
        f"removed {len(swept)} temporary file(s) left by interrupted restores: "
        + ", ".join(swept[:3])
        + more,
    )


def _runtime_dir(paths: Paths) -> Check:
    """The dir of the socket and the FIFOs: a directory of ours, private. (Its
    fixes never chmod through a name that might be a symlink or another's.)"""
    d = paths.runtime_dir
    note = paths.runtime_note
    try:
        st = d.lstat()
    except FileNotFoundError:
        return Check("runtime dir", True, f"{d} (not created yet)")
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        # Only RW_HOME names it outright; otherwise rw has chosen another already.
        return Check(
            "runtime dir",
            False,
            f"{d} is a symlink, not a directory, or belongs to uid {st.st_uid}",
            "point RW_HOME at a directory of yours" if os.environ.get("RW_HOME") else "",
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return Check("runtime dir", False, f"{d} mode {mode:04o}", f"chmod 700 -- {d}")
    return Check("runtime dir", True, f"{d} mode {mode:04o}" + (f" ({note})" if note else ""))


def _step_confirmations(paths: Paths, store: Store, sid: str | None) -> Check:
    """Shells confirm each step checkpoint once the daemon has answered on their
    FIFO; a shell whose latest ones all stay pending does not hear the daemon
    (its hooks and the daemon use different runtime dirs, or it times out)."""
    try:
        timeout = load(paths.config_file).watch_timeout
    except RwError:
        timeout = 0.5
    settled = time.time() - timeout - 1  # by then a shell that heard has confirmed
    latest: dict[str, list[str]] = {}
    for c in reversed(store.checkpoints(state=None)):
        if c.origin == "step" and c.session and c.created_at < settled:
            states = latest.setdefault(c.session, [])
            if len(states) < 3:
                states.append(c.state)
    deaf = [s for s, states in latest.items() if len(states) == 3 and "ok" not in states]
    open_ = {s for s, _pid, _host in store.open_sessions()}
    deaf = sorted((s for s in deaf if s in open_), key=lambda s: s != sid)
    if not deaf:
        return Check("step checkpoints", True, "confirmed by their shells")
    who = "this shell" if deaf[0] == sid else f"session {deaf[0]}"
    return Check(
        "step checkpoints",
        False,
        f"{who} does not hear the daemon: its last step checkpoints stayed pending "
        f"(the daemon answers in {paths.scratch_dir})",
        "start a new shell (its hooks then use the daemon's runtime dir); if it still fails, "
        "raise [watch] timeout in the config",
    )


def _recording(paths: Paths, store: Store | None, daemon_up: bool) -> Check:
    """Whether what the shells type reaches the store now, and what was lost."""
    problems = []
    if daemon_up:
        try:
            problems = client.request(paths, "status").get("problems", [])
        except RwError:
            pass
    else:
        problems = [p for p in [space_problem(paths.spool_dir, paths.data_dir)] if p]
    lost = store.counter("lost_commands") if store else 0
    last = json.loads(store.meta("last_loss") or "null") if store else None
    past = ""
    if lost and last:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["since"]))
        until = time.strftime("%H:%M:%S", time.localtime(last["until"]))
        past = (
            f"{lost} command(s) could not be recorded so far; the last {last['commands']} "
            f"from {when} to {until} in session {last['session']}: {last['why']}"
        )
    if problems:
        fix = f"free space where rw keeps its data (df -h {paths.data_dir})"
        if not any(p.startswith("no space") for p in problems):
            fix = f"see the daemon's log, {paths.log_file}"
        return Check("recording", False, "; ".join([*problems, *([past] if past else [])]), fix)
    return Check("recording", True, past or "every command typed so far reached the spool")


def _checkpoint_objects(paths: Paths, store: Store) -> Check:
    """Every object a checkpoint needs is present and matches its digest."""
    from .checkpoints import Checkpoints

    if store.db.execute("PRAGMA user_version").fetchone()[0] < 4:
        return Check("checkpoints", True, "none taken yet")
    try:
        cps = Checkpoints(paths, store, load(paths.config_file))
    except RwError:
        return Check("checkpoints", False, "cannot read the config", "see the config check")
    n = len(store.checkpoints())
    problems = cps.check_objects()
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return Check(
            "checkpoints",
            False,
            f"{len(problems)} damaged or missing object(s): " + "; ".join(problems[:3]) + more,
            "restores of those files will fail; take a new checkpoint (rw checkpoint create)",
        )
    return Check("checkpoints", True, f"{n} checkpoint(s), every object intact")
