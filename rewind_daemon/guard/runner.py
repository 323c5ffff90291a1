"""The circuit breaker: checkpoint, run a command, halt it on the first issue,
roll the machine back, verify, report.

A guarded run is recorded as a session (origin `guard`) of one step, the
command, with its output. The report, as JSON, is kept in the output slot of
step 0 of that session (no step has number 0), where `stored_report` and
`rw guard --again` find it.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import sqlite3
import termios
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from ..capture.outputs import make_output
from ..checkpoints.checkpoint import Checkpoints, Created, Watch, normalise, watches
from ..config import Config, GuardConfig
from ..display import escaped
from ..errors import EXIT_INCOMPLETE, EXIT_OK, EXIT_PROBLEM, NotFound, RwError
from ..paths import Paths, new_session_id
from ..progress import Progress, no_progress
from ..redact import Redactor
from ..store import MAX_OUTPUT, OutputRow, Store, env_blob
from .process import ProcessTree, RunResult, run
from .rules import ERROR, Classifier, RuleSet, Trip

REPORT_STEP = 0  # the output slot holding a guarded run's report
ROLLED_BACK = "Rollback completed successfully"
ROLLBACK_FAILED = "Rollback failed - manual intervention required"
NO_ROLLBACK = "Rollback skipped (--no-rollback)"
Notify = Callable[[str], None]


@dataclass
class GuardRequest:
    """What to run and how to guard it; all paths absolute."""

    command: list[str]
    cwd: str
    paths: list[str] = field(default_factory=list)
    packages: bool | None = None  # None: the config's [checkpoint] default
    services: bool | None = None
    timeout: float | None = None  # None: the config's [guard] timeout
    allow: list[str] = field(default_factory=list)
    expect: list[str] = field(default_factory=list)
    strict: bool = False
    rollback: bool = True
    redacted: bool = False  # the stored command had a secret masked: it cannot run again
    argv: list[str] | None = None  # what runs, when not `command` as given (`~` expanded there)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict) -> GuardRequest:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in doc.items() if k in known})

    @property
    def command_line(self) -> str:
        if self.argv is None:
            return shlex.join(self.command)
        return " ".join(_as_typed(w) for w in self.command)


def _as_typed(word: str) -> str:
    """A word of a command run with `~` expanded (argv), as a shell reads it."""
    if word in ("~", "~/"):
        return word
    if word.startswith("~/"):
        return "~/" + shlex.quote(word[2:])
    return shlex.quote(word)


@dataclass
class Rollback:
    status: str  # ROLLED_BACK, ROLLBACK_FAILED or NO_ROLLBACK
    reverted: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.status == ROLLED_BACK


@dataclass
class GuardReport:
    request: GuardRequest
    session: str | None
    checkpoint: int
    covered: list[str]  # what the checkpoint holds: trees, probes
    not_covered: list[str]  # probes that could not run, with why
    started_at: float
    ended_at: float
    exit_status: int | None  # the command's, as a shell reports it
    trip: Trip | None
    lines: int
    rollback: Rollback | None = None
    survivors: list[str] = field(default_factory=list)
    kill_seconds: float | None = None
    containment: str = ""
    run_seconds: float = 0.0  # from the start of the command to its end or halt
    host: str | None = None  # where it ran, when not here (rw guard --host)

    @property
    def halted(self) -> bool:
        return self.trip is not None

    @property
    def exit_code(self) -> int:
        if self.trip is None:
            return EXIT_OK
        if self.survivors or (
            self.rollback is not None and self.rollback.status == ROLLBACK_FAILED
        ):
            return EXIT_INCOMPLETE
        return EXIT_PROBLEM

    @property
    def remaining(self) -> list[str]:
        """What is not as the checkpoint recorded it (processes left running included)."""
        if self.rollback is not None and self.rollback.status != NO_ROLLBACK:
            return self.rollback.remaining
        return [f"still running: {s}" for s in self.survivors]

    @property
    def checkpoint_status(self) -> str:
        if self.rollback is not None:
            return self.rollback.status
        if self.survivors:
            return ROLLBACK_FAILED
        cid = self.checkpoint
        return f"Checkpoint {cid} kept: rw checkpoint restore {cid} undoes the run"

    def to_json(self) -> dict:
        return {
            "result": "halted" if self.halted else "passed",
            "exit_code": self.exit_code,
            "command": self.request.command_line,
            "trigger": self.trip.to_json() if self.trip else None,
            "checkpoint": self.checkpoint,
            "checkpoint_status": self.checkpoint_status,
            "reverted": self.rollback.reverted if self.rollback else [],
            "remaining": self.remaining,
            "covered": self.covered,
            "not_covered": self.not_covered,
            "session": self.session,
            "exit_status": self.exit_status,
            "lines": self.lines,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "run_seconds": self.run_seconds,
            "kill_seconds": self.kill_seconds,
            "containment": self.containment,
            "survivors": self.survivors,
            "rollback": self.rollback.status if self.rollback else None,
            "request": self.request.to_json(),
            "host": self.host,
        }

    @classmethod
    def from_json(cls, doc: dict) -> GuardReport:
        rollback = None
        if doc.get("rollback"):
            remaining = doc.get("remaining") or [] if doc["rollback"] != NO_ROLLBACK else []
            rollback = Rollback(doc["rollback"], doc.get("reverted") or [], remaining)
        return cls(
            request=GuardRequest.from_json(doc["request"]),
            session=doc.get("session"),
            checkpoint=doc["checkpoint"],
            covered=doc.get("covered") or [],
            not_covered=doc.get("not_covered") or [],
            started_at=doc["started_at"],
            ended_at=doc["ended_at"],
            exit_status=doc.get("exit_status"),
            trip=Trip.from_json(doc["trigger"]) if doc.get("trigger") else None,
            lines=doc.get("lines") or 0,
            rollback=rollback,
            survivors=doc.get("survivors") or [],
            kill_seconds=doc.get("kill_seconds"),
            containment=doc.get("containment") or "",
            run_seconds=doc.get("run_seconds") or 0.0,
            host=doc.get("host"),
        )


# -- the run --------------------------------------------------------------------------


def rule_set(cfg: GuardConfig, request: GuardRequest) -> RuleSet:
    return RuleSet(
        error=cfg.error,
        warning=cfg.warning,
        skip=cfg.skip,
        prompt=cfg.prompt,
        allow=[*cfg.allow, *request.allow],
        expect=[*cfg.expect, *request.expect],
        strict=cfg.strict or request.strict or bool(request.expect),
        ignore_case=cfg.ignore_case,
    )


def guard(
    paths: Paths,
    config: Config,
    request: GuardRequest,
    *,
    out_fd: int | None = None,
    in_fd: int | None = None,
    notify: Notify = lambda _: None,
    progress: Progress = no_progress,
) -> GuardReport:
    """Checkpoint, run `request.command` streaming to `out_fd`, and on the first
    issue kill it, roll back and verify. Raises RwError (exit 3) without running
    anything when the checkpoint cannot be taken."""
    classifier = Classifier(rule_set(config.guard, request))  # bad regexes: exit 2 now
    timeout = config.guard.timeout if request.timeout is None else request.timeout
    if timeout <= 0:
        raise RwError("--timeout must be more than 0 seconds")
    if not os.path.isdir(request.cwd):
        raise NotFound(f"{request.cwd}: no such directory to run in")
    for p in request.paths:
        if not os.path.lexists(p):
            raise NotFound(f"{p}: no such file or directory")
    redactor = config.redactor()
    stored_command, secrets = redactor.text(request.command_line)
    request.redacted = secrets > 0
    sid = new_session_id()
    label = f"rw guard: {stored_command}"[:200]
    cps, made = _checkpoint(paths, config, request, sid, label, progress)
    covered = [f"{t.root} ({t.entries} entries)" for t in made.trees] + made.probes
    not_covered = [f"{name}: {why}" for name, why in made.unavailable]
    notify(f"checkpoint {made.id}: {', '.join(covered)}")
    for line in not_covered + made.warnings:
        notify(f"checkpoint: {line}")
    try:
        _record_start(cps.store, sid, request, stored_command, redactor)
    except sqlite3.Error as e:
        cps.store.close()
        raise RwError(f"cannot record the run, so it did not start: {e}", EXIT_INCOMPLETE) from None

    tree = ProcessTree(config.guard.cgroup)
    try:
        result = run(
            request.argv or request.command,
            classifier=classifier,
            tree=tree,
            timeout=timeout,
            cwd=request.cwd,
            out_fd=out_fd,
            in_fd=in_fd,
            keep=MAX_OUTPUT,
        )
    except OSError as e:  # no terminal to be had, or the like: stop whatever started
        now = time.time()
        trip = Trip(ERROR, None, None, f"rw could not run the command: {e}")
        result = RunResult(trip, None, 0, b"", now, now, True, tree.kill(), None, "")
        tree.close()
    rollback = None
    if result.trip is not None:
        notify(f"halted: {describe_trip(result.trip)}")
        if request.rollback:
            notify(f"rolling back to checkpoint {made.id} (Ctrl-C waits until it is done)")
            rollback = roll_back(cps, made.id, result.survivors, in_fd, progress)
        else:
            rollback = Rollback(NO_ROLLBACK)
    report = _report(request, sid, made.id, covered, not_covered, result, rollback)
    try:
        _record_end(cps.store, sid, report, result, redactor, config.max_step_output)
    except sqlite3.Error as e:
        notify(f"the run could not be recorded: {e}")
    finally:
        cps.unpin(made.id)
        cps.store.close()
    return report


def _checkpoint(
    paths: Paths, config: Config, request: GuardRequest, sid: str, label: str, progress: Progress
) -> tuple[Checkpoints, Created]:
    """Never proceed without a valid checkpoint: any failure is exit 3."""
    store = None
    try:
        store = Store(paths.db)
        cps = Checkpoints(paths, store, config)
        trees = {w.path: w for w in watches(store, config)}
        for p in request.paths:
            trees.setdefault(normalise(p), Watch(normalise(p)))
        made = cps.create(
            list(trees.values()),
            pin=True,  # (gc keeps it until the run is over)
            packages=config.packages if request.packages is None else request.packages,
            services=config.services if request.services is None else request.services,
            label=label,
            origin="guard",
            session=sid,
            step=1,
            progress=progress,
        )
        return cps, made
    except (RwError, OSError, sqlite3.Error) as e:
        if store is not None:
            store.close()
        why = str(e)
        if isinstance(e, OSError) and e.strerror:
            why = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
        raise RwError(
            f"cannot take the checkpoint, so the command did not run: {why}", EXIT_INCOMPLETE
        ) from None


@contextmanager
def _shielded(terminal_fd: int | None) -> Iterator[None]:
    """A rollback is not interrupted half-way. Ctrl-C on the terminal sends no
    signal meanwhile (the dpkg and pip commands it runs would get it too), and
    SIGINT, SIGTERM and SIGHUP sent to rw wait. No signal is ignored outright:
    that would be inherited by a service the rollback starts."""
    saved_mode = None
    if terminal_fd is not None and os.isatty(terminal_fd):
        try:
            if os.tcgetpgrp(terminal_fd) == os.getpgrp():
                saved_mode = termios.tcgetattr(terminal_fd)
                mode = termios.tcgetattr(terminal_fd)
                mode[3] &= ~termios.ISIG
                termios.tcsetattr(terminal_fd, termios.TCSANOW, mode)
        except (OSError, termios.error):
            saved_mode = None
    saved = {}
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            saved[s] = signal.signal(s, lambda *_: None)
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        if saved_mode is not None:
            try:
                termios.tcsetattr(terminal_fd, termios.TCSANOW, saved_mode)  # type: ignore[arg-type]
            except (OSError, termios.error):
                pass


def roll_back(
    cps: Checkpoints,
    cid: int,
    survivors: list[str],
    terminal_fd: int | None = None,
    progress: Progress = no_progress,
) -> Rollback:
    """Restore checkpoint `cid` (packages, files, services), then verify it by
    comparing everything with the checkpoint again. Not while any process of
    the command lives: it could undo the restore as it is made."""
    if survivors:
        why = (
            "not rolled back: the command's processes are still running "
            f"(rw checkpoint restore {cid} once they are gone)"
        )
        return Rollback(ROLLBACK_FAILED, [], [why] + [f"still running: {s}" for s in survivors])
    with _shielded(terminal_fd):
        try:
            restored = cps.restore(cid, progress=progress)
        except (RwError, OSError, sqlite3.Error) as e:
            return Rollback(ROLLBACK_FAILED, [], [f"the restore stopped: {e}"] + survivors)
        remaining = list(restored.failed)
        if not remaining:
            try:
                cmp = cps.compare(cid, progress=progress)
            except (RwError, OSError, sqlite3.Error) as e:
                remaining.append(f"cannot verify: {e}")
            else:
                remaining += [f"{c.describe(t.root).strip()}" for t in cmp.trees for c in t.changes]
                remaining += [pc.describe() for p in cmp.probes for pc in p.changes]
                remaining += [f"{p.probe}: cannot verify: {p.unavailable}"
                              for p in cmp.probes if p.unavailable]  # fmt: skip
        remaining += [f"still running: {s}" for s in survivors]
        status = ROLLBACK_FAILED if remaining else ROLLED_BACK
        return Rollback(status, list(restored.restored), remaining)


def _report(
    request: GuardRequest,
    sid: str,
    cid: int,
    covered: list[str],
    not_covered: list[str],
    result: RunResult,
    rollback: Rollback | None,
) -> GuardReport:
    return GuardReport(
        request=request,
        session=sid,
        checkpoint=cid,
        covered=covered,
        not_covered=not_covered,
        started_at=result.started_at,
        ended_at=time.time(),
        exit_status=result.exit_status,
        trip=result.trip,
        lines=result.lines,
        rollback=rollback,
        survivors=result.survivors,
        kill_seconds=result.kill_seconds,
        containment=result.containment,
        run_seconds=result.ended_at - result.started_at,
    )


# -- the record -----------------------------------------------------------------------


def _record_start(
    store: Store, sid: str, request: GuardRequest, command: str, redactor: Redactor
) -> None:
    env, _ = redactor.env(dict(os.environ))
    now = time.time()
    with store.transaction():
        env_id = store.add_env(*env_blob(env))
        store.upsert_session(
            sid, parent_id=None, shell="bash", shell_version="", pid=os.getpid(),
            tty=None, started_at=now, cwd=request.cwd, host=socket.gethostname(),
            user=os.environ.get("USER") or str(os.getuid()), origin="guard", env_id=env_id,
        )  # fmt: skip
        store.begin_step(sid, 1, 1, command, request.cwd, now)


def _record_end(
    store: Store, sid: str, report: GuardReport, result: RunResult, redactor: Redactor, cap: int
) -> None:
    doc = report.to_json()
    if report.request.redacted:
        doc["command"] = doc["request"]["command"] = None  # the secret is not stored
    with store.transaction():
        session = store.get_session(sid)
        store.end_step(
            sid, 1, ended_at=report.ended_at, exit_code=result.exit_status,
            pipestatus=str(result.exit_status if result.exit_status is not None else ""),
            cwd=report.request.cwd, env_id=session.env_id if session else None,
        )  # fmt: skip
        program = report.request.command[0] if report.request.command else ""
        out, _ = make_output(result.output, program, redactor, cap=cap)
        store.set_output(sid, 1, out)
        report_doc = json.dumps(doc)  # the report is no output: kept as it is
        store.set_output(
            sid, REPORT_STEP, OutputRow(report_doc.encode(), report_doc, len(report_doc))
        )
        store.end_session(sid, time.time())


def stored_report(store: Store, sid: str) -> GuardReport | None:
    raw = store.output(sid, REPORT_STEP)
    session = store.get_session(sid)
    if raw is None or session is None or session.origin != "guard":
        return None
    doc = json.loads(raw)
    if doc.get("request", {}).get("command") is None:
        doc["request"]["command"] = []
    return GuardReport.from_json(doc)


def last_request(store: Store | None) -> GuardRequest:
    """The request of the most recent guarded run, for `rw guard --again`."""
    for s in store.sessions() if store is not None else []:
        if s.origin != "guard":
            continue
        report = stored_report(store, s.id)  # type: ignore[arg-type]
        if report is None or report.host is not None:
            continue  # (a run on another host is not run again here)
        if report.request.redacted or not report.request.command:
            raise RwError(
                "the last guarded command held a secret, which was not stored: run it again in full"
            )
        return report.request
    raise NotFound("no guarded run recorded yet (rw guard -- COMMAND)")


# -- rendering --------------------------------------------------------------------------


def describe_trip(trip: Trip) -> str:
    if trip.line_no is not None:
        return f"{trip.kind} at line {trip.line_no}: {trip.line}"
    return f"{trip.kind}: {trip.detail}"


def trigger_text(trip: Trip) -> str:
    if trip.line_no is not None:
        return f"line {trip.line_no}: {trip.line}"
    return trip.detail


# The renderers escape every value (display.escaped): a report may come from
# another host (rw guard --host), whose words are data, never terminal controls.


def render_text(report: GuardReport) -> str:
    """The report as the terminal shows it."""
    r = report
    out = [f"rw guard: {'HALTED' if r.halted else 'passed'}: {escaped(r.request.command_line)}"]
    if r.host is not None:
        out.append(f"  Host: {escaped(r.host)}")
    if r.trip is not None:
        out.append(f"  Trigger: {escaped(trigger_text(r.trip))}")
        detail = f" ({r.trip.detail})" if r.trip.line_no is not None and r.trip.detail else ""
        out.append(f"  Type: {escaped(r.trip.kind + detail)}")
    else:
        lines = f"{r.lines} line{'' if r.lines == 1 else 's'}"
        out.append(f"  Exit status: {r.exit_status}; {lines}, no issue")
    out.append(f"  Checkpoint Status: {escaped(r.checkpoint_status)}")
    rb = r.rollback
    if rb is not None and rb.reverted:
        out.append("  Reverted:")
        out += [f"    {escaped(line)}" for line in rb.reverted]
    elif rb is not None and rb.status == ROLLED_BACK:
        out.append("  Reverted: nothing (nothing had changed)")
    elif rb is not None and rb.status == ROLLBACK_FAILED:
        out.append("  Reverted: nothing")
    if r.remaining:
        out.append("  Remains (not as the checkpoint recorded it):")
        out += [f"    {escaped(line)}" for line in r.remaining]
    if rb is not None and rb.status == NO_ROLLBACK:
        out.append(f"  Undo later: rw checkpoint restore {r.checkpoint}")
    out.append(f"  Checkpoint: {r.checkpoint}; session: {escaped(str(r.session))}")
    return "\n".join(out) + "\n"


def render_markdown(report: GuardReport) -> str:
    r = report
    rows = [("Command", f"`{escaped(r.request.command_line)}`")]
    if r.host is not None:
        rows.append(("Host", f"`{escaped(r.host)}`"))
    if r.trip is not None:
        line = escaped(trigger_text(r.trip))
        if r.trip.line_no is not None:
            line = f"line {r.trip.line_no}: `{escaped(str(r.trip.line))}`"
        rows += [("Trigger", line), ("Type", escaped(r.trip.kind))]
    else:
        rows.append(("Exit status", str(r.exit_status)))
    rows += [
        ("Checkpoint Status", escaped(r.checkpoint_status)),
        ("Checkpoint", f"{r.checkpoint} ({escaped(', '.join(r.covered))})"),
        ("Session", f"`{escaped(str(r.session))}`"),
        ("Lines of output", str(r.lines)),
    ]
    out = [f"# rw guard: {'halted' if r.halted else 'passed'}", "", "| | |", "| --- | --- |"]
    out += [f"| {k} | {v.replace('|', chr(92) + '|')} |" for k, v in rows]
    rb = r.rollback
    for title, items in (
        ("Reverted", rb.reverted if rb else []),
        ("Remains", r.remaining),
        ("Not covered by the checkpoint", r.not_covered),
    ):
        if items:
            out += ["", f"## {title}", ""] + [f"- `{escaped(line.strip())}`" for line in items]
    return "\n".join(out) + "\n"
