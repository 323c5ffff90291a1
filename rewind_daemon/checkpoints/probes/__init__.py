"""System-state probes for checkpoints: dpkg packages, pip environments, services.

A probe captures a JSON-serialisable state, diffs a recorded state against the
current one, and restores the recorded one. A probe that cannot run on this
machine says why through `unavailable()`; a single item that cannot be
restored lands in `ProbeRestore.failed` with a one-line reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

from ...progress import Progress, no_progress

QUERY_TIMEOUT = 60.0  # read-only queries (dpkg-query, pip list, status)
CHANGE_TIMEOUT = 900.0  # installs and removals, which may run maintainer scripts


@dataclass(frozen=True)
class ProbeChange:
    """One thing a restore would do to get from the current state back to the recorded one."""

    probe: str
    item: str
    action: str
    recorded: str | None
    current: str | None

    def describe(self) -> str:
        before = self.current if self.current is not None else "absent"
        after = self.recorded if self.recorded is not None else "absent"
        # Versions read as part of the item ("hello:amd64 1.3-1"), states do not.
        sep = ": " if self.probe == "services" else " "
        return f"{self.probe}: {self.item}{sep}{before} -> {after} ({self.action})"


@dataclass
class ProbeRestore:
    done: list[ProbeChange] = field(default_factory=list)
    failed: list[tuple[ProbeChange, str]] = field(default_factory=list)


class Probe(Protocol):
    name: str

    def unavailable(self) -> str | None: ...

    def capture(self, artifacts: Path | None = None, progress: Progress = no_progress) -> dict: ...

    def diff(self, recorded: dict, current: dict) -> list[ProbeChange]: ...

    def restore(
        self, recorded: dict, current: dict, artifacts: Path | None = None
    ) -> ProbeRestore: ...


@dataclass
class ProbeConfig:
    # Python interpreters (executables or venv dirs); empty = the active one.
    pip: list[str] = field(default_factory=list)
    # Wheel/sdist directories for exact reinstalls (used with --no-index).
    pip_find_links: list[str] = field(default_factory=list)
    # Service names; empty = every sysv script (or systemd service unit).
    services: list[str] = field(default_factory=list)


def available_probes(config: ProbeConfig, *, packages: bool, services: bool) -> list[Probe]:
    """The probes a system checkpoint uses, whether or not they can run here."""
    probes: list[Probe] = []
    if packages:
        from .dpkg import DpkgProbe
        from .pip import PipProbe

        probes += [DpkgProbe(), PipProbe(config.pip, config.pip_find_links)]
    if services:
        from .services import ServiceProbe

        probes.append(ServiceProbe(config.services))
    return probes


@dataclass
class Ran:
    """The outcome of one external command; `returncode` is None if it never finished."""

    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    problem: str = ""  # why it did not run or finish ("not found", "timed out ...")

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def reason(self) -> str:
        """One line saying why the command failed."""
        # "python -m pip" is pip to the reader.
        name = self.argv[2] if self.argv[1:2] == ["-m"] else os.path.basename(self.argv[0])
        if self.problem:
            return f"{name}: {self.problem}"
        for text in (self.stderr, self.stdout):
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            # apt says "E: ...", pip and dpkg say "ERROR: ..." / "dpkg: error ...".
            errors = [ln for ln in lines if ln.startswith("E:") or "error" in ln.lower()]
            if errors or lines:
                detail = (errors or lines)[-1]
                return detail if detail.startswith(f"{name}: ") else f"{name}: {detail}"
        return f"{name}: exit status {self.returncode}"


def run(
    argv: Sequence[str], *, timeout: float = QUERY_TIMEOUT, env: dict[str, str] | None = None
) -> Ran:
    """Run argv with output captured in temporary files.

    Files rather than pipes, because init scripts and maintainer scripts may
    leave a daemon holding the pipe open; on timeout the whole process group
    is killed so a hung script cannot hang rw.
    """
    argv = list(argv)
    full_env = {**os.environ, "LC_ALL": "C", **(env or {})}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=full_env,
                start_new_session=True,
            )
        except FileNotFoundError:
            return Ran(argv, None, "", "", "not found")
        except OSError as e:
            return Ran(argv, None, "", "", e.strerror or str(e))
        try:
            code: int | None = proc.wait(timeout=timeout)
            problem = ""
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            code, problem = None, f"timed out after {timeout:g} s"
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    return Ran(argv, code, stdout, stderr, problem)


def have(program: str) -> bool:
    return shutil.which(program) is not None
