"""Health checks for `rw doctor`."""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass

from . import client
from .config import load
from .errors import RwError
from .history import current_session_id
from .ingest import SPOOL_SUFFIX, space_problem
from .paths import Paths
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
    else:
        checks.append(
            Check("daemon", False, f"not reachable at {paths.socket}", "run: rw daemon start")
        )

    try:
        st = paths.runtime_dir.stat()
        private = stat.S_IMODE(st.st_mode) & 0o077 == 0 and st.st_uid == os.getuid()
        checks.append(
            Check(
                "runtime dir",
                private,
                f"{paths.runtime_dir} mode {stat.S_IMODE(st.st_mode):04o}",
                "" if private else f"chmod 700 {paths.runtime_dir}",
            )
        )
    except FileNotFoundError:
        checks.append(Check("runtime dir", True, f"{paths.runtime_dir} (not created yet)"))

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
        spooled = (paths.spool_dir / f"{sid}{SPOOL_SUFFIX}").exists()
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
        store.close()
    return checks


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
