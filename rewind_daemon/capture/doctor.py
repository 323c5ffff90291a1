"""Health checks for `rw doctor`."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import sqlite3
import stat
import time
from dataclasses import dataclass

from ..config import load
from ..display import escaped
from ..errors import RwError
from ..paths import Paths, current_session_id, session_file
from ..store import SCHEMA_VERSION, Store
from . import client, termtext
from .ingest import DROPPED, SPOOL_SUFFIX, space_problem


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


def run_checks(paths: Paths, *, recorder_in_c: bool) -> list[Check]:
    """`recorder_in_c`: whether the recorder's loop runs in C (the recorder is
    above capture: the caller, which may import it, says)."""
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
        checks.append(Check("store", False, str(e), _store_access_fix(paths)))
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
    checks.append(_hooks(paths, store, sid))

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
    checks.append(_output_text())
    checks.append(_recorder_loop(recorder_in_c))
    redactions = store.counter("redactions") if store else 0
    checks.append(Check("redactions", True, f"{redactions} secret(s) redacted so far"))
    checks.append(_dropped(paths, store))
    if store is not None:
        checks.append(_checkpoint_objects(paths, store))
        checks.append(_restore_leftovers(paths, store))
        checks.append(_step_confirmations(paths, store, sid))
        store.close()
    return checks


def _hooks(paths: Paths, store: Store | None, sid: str | None) -> Check:
    """This shell records (when rw doctor runs in one), and no open shell has
    lost the hook that ends its commands: a shell whose prompt hook was replaced
    after rw init (PROMPT_COMMAND="...", precmd_functions=(...)) still records
    each command's start, never its end, so a step stays open when the next
    begins."""
    broken = []
    if store is not None:
        open_ = [s for s, _pid, _host in store.open_sessions()]
        for s in sorted(open_, key=lambda s: s != sid):  # this shell's first
            before = store.steps(s, limit=20)[:-1]  # the latest may still run
            unended = 0
            while unended < len(before) and before[-1 - unended].ended_at is None:
                unended += 1
            if unended:  # named by the first of them: often what replaced the hook
                broken.append((s, before[-unended]))
    if broken:
        s, step = broken[0]
        row = store.get_session(s) if store is not None else None
        shell = row.shell if row and row.shell in ("bash", "zsh") else "bash"
        hook = "precmd_functions" if shell == "zsh" else "PROMPT_COMMAND"
        who = "this shell" if s == sid else f"session {s} ({shell}, pid {row.pid if row else '?'})"
        more = f" (and {len(broken) - 1} other shell(s))" if len(broken) > 1 else ""
        command = escaped(step.command.split("\n", 1)[0])[:60]
        return Check(
            "hooks",
            False,
            f"{who}{more} records when commands start but not when they end, since "
            f"step {step.number} ({command}): its {hook} was replaced after "
            "rw init, so exit codes, directories and environments are lost",
            f'run eval "$(rw init {shell})" again in that shell; in your rc file, put it '
            f"after whatever sets {hook}",
        )
    lost = os.environ.get("RW_PROMPT_HOOK_LOST", "")
    if sid and lost in ("PROMPT_COMMAND", "precmd_functions"):
        # Told by the rw function of this shell, which sees its own hooks. (bash
        # still ends each command when the next begins, so the records alone
        # cannot tell; zsh loses the ends, which the check above sees from cron.)
        shell = "zsh" if lost == "precmd_functions" else "bash"
        return Check(
            "hooks",
            False,
            f"this shell's {lost} was replaced after rw init: rw's prompt hook no longer "
            "runs, so commands end late (when the next one starts) or not at all",
            f'run eval "$(rw init {shell})" again in this shell; in your rc file, put it '
            f"after whatever sets {lost}",
        )
    if not sid:
        return Check(
            "hooks",
            True,
            "skipped for this process: it is not run from a recorded shell (RW_SESSION "
            'is not set); a shell records once its rc file has: eval "$(rw init bash)"',
        )
    recorded = store is not None and store.get_session(sid) is not None
    spool = session_file(paths.spool_dir, sid, SPOOL_SUFFIX)
    spooled = spool is not None and spool.exists()
    return Check(
        "hooks",
        recorded or spooled,
        f"session {sid}" + ("" if recorded else " (not ingested yet)"),
        "" if recorded or spooled else f"the spool dir {paths.spool_dir} is not writable",
    )


def _dropped(paths: Paths, store: Store | None) -> Check:
    """Spool bytes the daemon could not read as records (damaged, cut short, not
    rw's): the commands in them are lost. Reported, as lost commands are: they
    are past, and the daemon's log says what they were."""
    dropped = store.counter(DROPPED) if store else 0
    if not dropped:
        return Check("spool records", True, "every record read so far was stored")
    return Check(
        "spool records",
        True,
        f"{dropped} record(s) or damaged part(s) of spool files dropped so far "
        f"(what and when: {paths.log_file})",
    )


def _store_access_fix(paths: Paths) -> str:
    """How to make a store that cannot be opened readable again: give it back
    its owner and mode. (Moving it aside would hide what was recorded.)"""
    user = pwd.getpwuid(os.getuid()).pw_name
    d = paths.data_dir
    if not os.access(d, os.R_OK | os.W_OK | os.X_OK):
        return f"chmod 700 {shlex.quote(str(d))}"
    names = [paths.db.name, paths.db.name + "-wal", paths.db.name + "-shm"]
    files = [d / n for n in names if (d / n).exists()]
    theirs = [f for f in files if f.stat().st_uid != os.getuid()]
    stuck = [f for f in files if not os.access(f, os.R_OK | os.W_OK)]
    if not (theirs or stuck):
        return (
            f"it is damaged, not locked away: keep it as it is, and save what it holds with "
            f"sqlite3 {shlex.quote(str(paths.db))} .recover > rw-recovered.sql"
        )
    quoted = " ".join(shlex.quote(str(f)) for f in files)
    chmod = f"chmod 600 {quoted}"
    if theirs:
        return f"as root: chown {shlex.quote(user)} {quoted} && {chmod}"
    return chmod


def _restore_leftovers(paths: Paths, store: Store) -> Check:
    """Temporary copies that killed restores left in watched trees, removed."""
    from ..checkpoints.checkpoint import Checkpoints

    try:
        swept = Checkpoints(paths, store, load(paths.config_file)).sweep_leftovers()
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


def _output_text() -> Check:
    """Which code makes recorded output's text: C, or Python where rw was
    installed without a compiler (the same text, several times slower)."""
    if termtext.in_c() and termtext.has_fast_spans():
        return Check("output text", True, "made in C")
    return Check(
        "output text",
        True,
        "warning: made in Python (rw's C modules were not built): output ingest is slower; "
        "install gcc and the Python headers and reinstall",
    )


def _recorder_loop(in_c: bool) -> Check:
    """Which code moves a recorded shell's output to the terminal: C, or Python
    where rw was installed without a compiler (the same bytes, more CPU)."""
    if in_c:
        return Check("recorder loop", True, "in C")
    return Check(
        "recorder loop",
        True,
        "warning: in Python (rw's C modules were not built): rw record takes more CPU "
        "per byte shown; install gcc and the Python headers and reinstall",
    )


def _checkpoint_objects(paths: Paths, store: Store) -> Check:
    """Every object a checkpoint needs is present and matches its digest."""
    from ..checkpoints.checkpoint import Checkpoints

    if store.schema_version() < 4:
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
