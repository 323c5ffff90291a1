"""Guarded runs over several hosts. Rolling by default: one host at a time, up
to the first that does not pass, the hosts after it untouched. With parallel
N: N at a time, and when one does not pass, the others in flight are halted
and rolled back (stop the line) and no more are started. Each run is brought
home into the local store as it ends."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..config import Config
from ..errors import EXIT_OK, EXIT_PROBLEM, RwError
from ..guard.rules import INTERRUPTED, Classifier
from ..guard.runner import GuardReport, GuardRequest, render_markdown, rule_set
from ..paths import Paths
from ..store import Store
from . import checks, client, sessions
from .bundle import bundle

RAN, HALTED, ROLLED_BACK = "ran", "halted", "rolled back"
NO_REPORT, NOT_RUN, UNTOUCHED = "no report", "not run", "untouched"


@dataclass
class HostRun:
    host: str
    state: str  # RAN, HALTED, ROLLED_BACK (stopped with the line), NO_REPORT, NOT_RUN, UNTOUCHED
    report: GuardReport | None = None
    why: str = ""  # NO_REPORT, NOT_RUN: why
    error_code: int = EXIT_PROBLEM  # NOT_RUN: the error's exit code
    going_on: bool = False  # NO_REPORT: the run goes on there (rw guard --attach reports it)

    @property
    def exit_code(self) -> int:
        if self.report is not None:
            return self.report.exit_code
        if self.state == UNTOUCHED:
            return EXIT_OK
        return self.error_code if self.state == NOT_RUN else EXIT_PROBLEM

    def describe(self) -> str:
        r = self.report
        if self.state == HALTED and r is not None and r.trip is not None:
            return f"halted ({r.trip.kind}); {r.checkpoint_status}"
        if self.state == ROLLED_BACK and r is not None:
            return f"rolled back (another host halted); {r.checkpoint_status}"
        if self.state == NO_REPORT and self.going_on:
            return f"no report ({self.why}); the run goes on there under the breaker"
        if self.state == NO_REPORT:
            return f"no report ({self.why})"
        if self.state == NOT_RUN:
            return f"not run ({self.why})"
        return self.state

    def to_json(self) -> dict:
        return {
            "host": self.host,
            "state": self.state,
            "summary": self.describe(),
            "exit_code": self.exit_code,
            "report": self.report.to_json() if self.report is not None else None,
        }


def summary_json(runs: list[HostRun]) -> dict:
    """A fleet's --report (JSON): each host's state and report, in order."""
    return {"exit_code": max(r.exit_code for r in runs), "hosts": [r.to_json() for r in runs]}


def summary_markdown(runs: list[HostRun]) -> str:
    """A fleet's --report (Markdown): a table of the hosts, then each report
    (its headings one level down)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["# rw guard: hosts", "", "| Host | State | Exit |", "| --- | --- | --- |"]
    out += [f"| `{cell(r.host)}` | {cell(r.describe())} | {r.exit_code} |" for r in runs]
    for r in runs:
        if r.report is not None:
            lines = render_markdown(r.report).splitlines()
            out += [""] + [f"#{line}" if line.startswith("#") else line for line in lines]
    return "\n".join(out) + "\n"


Notify = Callable[[str, str], None]


def _for(notify: Notify, host: str) -> client.Notify:
    return lambda message: notify(host, message)


class _Line:
    """Output of runs side by side: whole lines, each after its host's name."""

    def __init__(self, output: client.Output):
        self.output = output
        self.lock = threading.Lock()
        self.partial: dict[str, bytes] = {}

    def of(self, host: str) -> client.Output:
        def write(data: bytes) -> None:
            with self.lock:
                text = self.partial.pop(host, b"") + data
                *lines, rest = text.split(b"\n")
                if rest:
                    self.partial[host] = rest
                if lines:
                    self.output(b"".join(b"%s: %s\n" % (host.encode(), ln) for ln in lines))

        return write

    def flush(self, host: str) -> None:
        with self.lock:
            rest = self.partial.pop(host, b"")
            if rest:
                self.output(b"%s: %s\n" % (host.encode(), rest))


def guard_hosts(
    paths: Paths,
    config: Config,
    request: GuardRequest | None,
    hosts: list[str],
    *,
    ssh: list[str],
    output: client.Output | None,
    notify: Notify,
    done: Callable[[HostRun], None] = lambda _: None,
    parallel: int = 1,
    earlier: Callable[[str, GuardReport], None] = lambda *_: None,
    keys_fd: int | None = None,
) -> list[HostRun]:
    """Run `request` on the hosts (see client.guard_remote); every host gets a
    HostRun, in the order given. With no request, each host's last guarded run
    is reported (--attach). A host that cannot be reached raises RwError when it
    is the only one; among several, it is a host that did not pass. A run there
    whose report did not come back (the connection went) and that has ended
    since is brought home and given to `earlier` before the host's new run.
    With one host, what `keys_fd` gives goes to the command there."""
    for host in hosts:
        client.check_destination(host)
    if request is not None:
        _check_rules(config, request)
    shipped = bundle()  # made (or read from the cache) once for every host
    stop = client.Stop()
    stop.catch_signals()
    lines = _Line(output) if parallel > 1 and output is not None else None
    results: dict[str, HostRun] = {}
    finished: queue.Queue[HostRun] = queue.Queue()

    def came_back(host: str, doc: dict) -> None:
        try:
            report = checks.report(doc.get("report"))
        except checks.Malformed as e:
            notify(host, f"the report of an earlier run there is not one rw can read ({e})")
            return
        report.host = host
        _bring_home(paths, config, host, client.RemoteRun(host, report, doc), notify, None)
        earlier(host, report)

    def one(host: str) -> HostRun:
        try:
            run = client.guard_remote(
                host, config, request, ssh=ssh, notify=_for(notify, host), stop=stop,
                output=lines.of(host) if lines is not None else output, the_bundle=shipped,
                earlier=lambda doc: came_back(host, doc),
                keys_fd=keys_fd if len(hosts) == 1 else None,
            )  # fmt: skip
        except RwError as e:
            if len(hosts) == 1:
                raise
            return HostRun(host, NOT_RUN, why=str(e), error_code=e.exit_code)
        finally:
            if lines is not None:
                lines.flush(host)
        if run.run:
            asked = None if request is None else replace(request, argv=request.command)
            _bring_home(paths, config, host, run, notify, asked.command_line if asked else None)
        if run.report is None:
            return HostRun(host, NO_REPORT, why=run.lost, going_on=run.going_on)
        run.report.host = host
        state = RAN
        if run.report.halted:
            trip = run.report.trip
            stopped = trip is not None and trip.kind == INTERRUPTED and stop.the_line
            state = ROLLED_BACK if stopped else HALTED
        return HostRun(host, state, run.report)

    def finish(result: HostRun) -> None:
        results[result.host] = result
        if result.exit_code != EXIT_OK and not stop.asked:
            stop.ask(f"{result.host} did not pass", the_line=True)
        done(result)

    try:
        if parallel <= 1:
            for host in hosts:
                if stop.asked:
                    break
                finish(one(host))
        else:
            running = 0
            waiting = list(hosts)
            errors: list[BaseException] = []

            def work(host: str) -> None:
                try:
                    finished.put(one(host))
                except BaseException as e:  # (one host: its RwError, raised below)
                    errors.append(e)
                    finished.put(HostRun(host, NOT_RUN, why=str(e)))

            while waiting or running:
                while waiting and running < parallel and not stop.asked:
                    threading.Thread(target=work, args=(waiting.pop(0),), daemon=True).start()
                    running += 1
                if not running:
                    break
                try:
                    result = finished.get(timeout=0.2)
                except queue.Empty:
                    continue
                running -= 1
                finish(result)
            if errors and len(hosts) == 1:
                raise errors[0]
    finally:
        stop.release_signals()
    untouched = [HostRun(h, UNTOUCHED) for h in hosts if h not in results]
    for u in untouched:
        done(u)
    return [results.get(h) or HostRun(h, UNTOUCHED) for h in hosts]


def _check_rules(config: Config, request: GuardRequest) -> None:
    """What the breaker there would refuse (a bad regex, a timeout of 0) is
    refused here, before any host is reached, as a local run refuses it."""
    Classifier(rule_set(config.guard, request))
    timeout = config.guard.timeout if request.timeout is None else request.timeout
    if timeout <= 0:
        raise RwError("--timeout must be more than 0 seconds")


def _bring_home(
    paths: Paths,
    config: Config,
    host: str,
    run: client.RemoteRun,
    notify: Notify,
    command: str | None,
) -> None:
    store = Store(paths.db)
    try:
        sid = sessions.bring_home(
            store, host, run.run, config.redactor(), config.max_step_output, command
        )
        if sid and run.report is not None:
            run.report.session = sid
    except RwError as e:
        notify(host, f"the run could not be stored here: {e}")
    finally:
        store.close()
