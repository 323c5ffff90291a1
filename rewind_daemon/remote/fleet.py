"""Guarded runs over several hosts: rolling, one host at a time, up to the first
that does not pass; the hosts after it are left untouched. Each run is brought
home into the local store as it ends."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..config import Config
from ..errors import EXIT_OK, EXIT_PROBLEM, RwError
from ..guard.runner import GuardReport, GuardRequest
from ..paths import Paths
from ..store import Store
from . import client, sessions

RAN, HALTED, NO_REPORT, UNTOUCHED = "ran", "halted", "no report", "untouched"


@dataclass
class HostRun:
    host: str
    state: str  # RAN, HALTED, NO_REPORT or UNTOUCHED
    report: GuardReport | None = None
    why: str = ""  # NO_REPORT: why; or why the run was not stored here

    @property
    def exit_code(self) -> int:
        if self.report is not None:
            return self.report.exit_code
        return EXIT_OK if self.state == UNTOUCHED else EXIT_PROBLEM

    def describe(self) -> str:
        r = self.report
        if self.state == HALTED and r is not None and r.trip is not None:
            return f"halted ({r.trip.kind}); {r.checkpoint_status}"
        if self.state == NO_REPORT:
            return f"no report ({self.why}); the run goes on there under the breaker"
        return self.state


def _for(notify: Callable[[str, str], None], host: str) -> client.Notify:
    return lambda message: notify(host, message)


def guard_hosts(
    paths: Paths,
    config: Config,
    request: GuardRequest | None,
    hosts: list[str],
    *,
    ssh: list[str],
    out_fd: int | None,
    notify: Callable[[str, str], None],
    done: Callable[[HostRun], None] = lambda _: None,
) -> list[HostRun]:
    """Run `request` on each host in turn (see client.guard_remote); every host
    gets a HostRun, in order, those after the first that did not pass UNTOUCHED.
    With no request, each host's last guarded run is reported (--attach)."""
    for host in hosts:
        client.check_destination(host)
    runs: list[HostRun] = []
    for host in hosts:
        if any(r.exit_code != EXIT_OK for r in runs):
            runs.append(HostRun(host, UNTOUCHED))
            done(runs[-1])
            continue
        run = client.guard_remote(
            host, config, request, ssh=ssh, out_fd=out_fd, notify=_for(notify, host)
        )
        result = HostRun(host, NO_REPORT, why=run.lost)
        if run.report is not None:
            run.report.host = host
            result = HostRun(host, HALTED if run.report.halted else RAN, run.report)
        if run.run:
            store = Store(paths.db)
            try:
                sid = sessions.bring_home(
                    store, host, run.run, config.redactor(), config.max_step_output
                )
                if sid and run.report is not None:
                    run.report.session = sid
            except RwError as e:
                notify(host, f"the run could not be stored here: {e}")
            finally:
                store.close()
        runs.append(result)
        done(result)
    return runs
