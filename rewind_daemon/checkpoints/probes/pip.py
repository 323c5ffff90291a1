"""The pip probe: the distributions installed for one or more Python interpreters."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from ...errors import EXIT_PROBLEM, RwError
from ...progress import Progress, no_progress
from . import CHANGE_TIMEOUT, ProbeChange, ProbeRestore, Ran, run

PIP_ENV = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
UNOWNED = "owned by no distribution"

# Run by the probed interpreter: the top-level entries of its install directories
# that no installed distribution's RECORD owns. An install stopped half-way leaves
# its files, and a .dist-info without RECORD (written last), among them.
_UNOWNED_SCRIPT = r"""
import csv, json, os, sysconfig
out = {}
for d in sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}):
    try:
        names = set(os.listdir(d))
    except OSError:
        continue
    owned = {"__pycache__"}
    for name in names:
        if name.endswith(".dist-info"):
            try:
                with open(os.path.join(d, name, "RECORD"), newline="", encoding="utf-8") as f:
                    rows = list(csv.reader(f))
            except (OSError, UnicodeDecodeError, csv.Error):
                continue
            owned.add(name)
            owned.update(r[0].split("/")[0] for r in rows if r and r[0])
    out[d] = sorted(names - owned)
print(json.dumps(out))
"""


def default_interpreter() -> str:
    """The active Python: the virtualenv's if one is active, else python3 on PATH."""
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        return os.path.join(venv, "bin", "python")
    return shutil.which("python3") or "python3"


def interpreter_path(spec: str) -> str:
    """A python executable for spec (an executable or a venv directory), kept unresolved:
    a venv's python is a symlink to the base interpreter, and resolving it would lose
    the venv."""
    path = os.path.abspath(os.path.expanduser(spec))
    return os.path.join(path, "bin", "python") if os.path.isdir(path) else path


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class PipProbe:
    name = "pip"

    def __init__(self, interpreters: list[str] | None = None, find_links: list[str] | None = None):
        specs = interpreters or [default_interpreter()]
        self.interpreters = sorted({interpreter_path(s) for s in specs})
        self.find_links = [os.path.abspath(os.path.expanduser(d)) for d in find_links or []]

    def unavailable(self) -> str | None:
        problems = []
        for python in self.interpreters:
            if not os.access(python, os.X_OK) or os.path.isdir(python):
                problems.append(f"{python}: no such interpreter")
            elif not run([python, "-c", "import pip"]).ok:
                problems.append(f"{python}: pip is not installed for it")
        return "; ".join(problems) or None

    def capture(self, artifacts: Path | None = None, progress: Progress = no_progress) -> dict:
        return {
            "environments": {python: self._list(python) for python in self.interpreters},
            "unowned": {python: self._unowned(python) for python in self.interpreters},
            "artifacts": [],
        }

    def _unowned(self, python: str) -> dict[str, list[str]]:
        """install directory -> its top-level entries no distribution owns."""
        ran = run([python, "-I", "-c", _UNOWNED_SCRIPT])
        try:
            if not ran.ok:
                raise ValueError(ran.reason())
            found = json.loads(ran.stdout)
        except ValueError as e:
            raise RwError(f"pip: cannot read the files of {python}: {e}", EXIT_PROBLEM) from None
        return {str(d): [str(n) for n in names] for d, names in found.items()}

    def _list(self, python: str) -> dict[str, dict[str, str]]:
        argv = [python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"]
        ran = run(argv, env=PIP_ENV)
        try:
            if not ran.ok:
                raise ValueError(ran.reason())
            listed = json.loads(ran.stdout)
        except ValueError as e:
            raise RwError(f"pip: cannot list the packages of {python}: {e}", EXIT_PROBLEM) from None
        found = {}
        for dist in listed:
            entry = {"version": str(dist["version"])}
            if dist.get("editable_project_location"):
                entry["editable"] = str(dist["editable_project_location"])
            found[normalize(str(dist["name"]))] = entry
        return dict(sorted(found.items()))

    def diff(self, recorded: dict, current: dict) -> list[ProbeChange]:
        changes = [change for _, _, change in self._changes(recorded, current)]
        return changes + [change for _, _, change in self._leftovers(recorded, current)]

    def _leftovers(self, recorded: dict, current: dict) -> list[tuple[str, str, ProbeChange]]:
        """(interpreter, path, change) for each entry of an install directory that
        no distribution owns now and that was not there, or was owned, then."""
        rec_all, cur_all = recorded.get("unowned", {}), current.get("unowned", {})
        found = []
        # (A checkpoint taken before these were recorded has nothing to compare with.)
        for python in sorted(set(rec_all) & set(cur_all)):
            for directory, names in sorted(cur_all[python].items()):
                before = set(rec_all[python].get(directory, []))
                for name in names:
                    if name not in before and name not in (".", "..") and "/" not in name:
                        path = os.path.join(directory, name)
                        item = f"{path} ({python})"
                        change = ProbeChange(self.name, item, "remove", None, UNOWNED)
                        found.append((python, path, change))
        return found

    def _changes(self, recorded: dict, current: dict) -> list[tuple[str, str, ProbeChange]]:
        """(interpreter, distribution, change) for each difference."""
        rec_envs, cur_envs = recorded.get("environments", {}), current.get("environments", {})
        changes = []
        # An environment captured only on one side has nothing to compare with.
        for python in sorted(set(rec_envs) & set(cur_envs)):
            rec, cur = rec_envs[python], cur_envs[python]
            for dist in sorted(set(rec) | set(cur)):
                r, c = rec.get(dist), cur.get(dist)
                if r == c:
                    continue
                action = "remove" if r is None else "install" if c is None else "reinstall"
                change = ProbeChange(self.name, f"{dist} ({python})", action, _shown(r), _shown(c))
                changes.append((python, dist, change))
        return changes

    def restore(self, recorded: dict, current: dict, artifacts: Path | None = None) -> ProbeRestore:
        result = ProbeRestore()
        rec_envs = recorded.get("environments", {})
        by_python: dict[str, list[tuple[str, ProbeChange]]] = {}
        where: dict[ProbeChange, tuple[str, str]] = {}  # change -> (interpreter, distribution)
        for python, dist, change in self._changes(recorded, current):
            by_python.setdefault(python, []).append((dist, change))
            where[change] = (python, dist)
        install = ["install", "--no-deps"]  # the recorded set already holds the dependencies
        if self.find_links:
            install.append("--no-index")
            for directory in self.find_links:
                install += ["--find-links", directory]
        leftovers: dict[str, list[tuple[str, ProbeChange]]] = {}
        for python, path, change in self._leftovers(recorded, current):
            leftovers.setdefault(python, []).append((path, change))
        for python in sorted(set(by_python) | set(leftovers)):
            changes = by_python.get(python, [])
            if not os.access(python, os.X_OK):
                gone = changes + leftovers.get(python, [])
                result.failed += [(c, f"{python}: no such interpreter") for _, c in gone]
                continue
            removals = [(c, [d]) for d, c in changes if c.action == "remove"]
            installs = [
                (c, _requirement(d, rec_envs[python][d]))
                for d, c in changes
                if c.action != "remove"
            ]
            self._pip(python, ["uninstall", "-y"], removals, result)
            # What an install stopped half-way left, pip cannot uninstall (no RECORD).
            for path, change in leftovers.get(python, []):
                why = _remove_entry(path)
                if why is None:
                    result.done.append(change)
                else:
                    result.failed.append((change, why))
            # Forced: a distribution whose files were half replaced still looks installed.
            self._pip(python, [*install, "--force-reinstall"], installs, result)
        # A removal pip refused (a half-installed distribution) is done if the sweep did it.
        refused = [(c, why) for c, why in result.failed if c.action == "remove" and c in where]
        now = {where[c][0]: self._list(where[c][0]) for c, _ in refused}
        for change, why in refused:
            python, dist = where[change]
            if dist not in now[python]:
                result.failed.remove((change, why))
                result.done.append(change)
        return result

    def _pip(
        self,
        python: str,
        options: list[str],
        work: list[tuple[ProbeChange, list[str]]],
        result: ProbeRestore,
    ) -> None:
        """Run pip once for all the work; if that fails, once per change to learn which."""
        if not work:
            return
        base = [python, "-m", "pip", *options]
        ran = run(base + [a for _, args in work for a in args], timeout=CHANGE_TIMEOUT, env=PIP_ENV)
        if ran.ok or len(work) == 1:
            for change, _ in work:
                _record(result, change, ran)
            return
        for change, args in work:
            _record(result, change, run(base + args, timeout=CHANGE_TIMEOUT, env=PIP_ENV))


def _record(result: ProbeRestore, change: ProbeChange, ran: Ran) -> None:
    if ran.ok:
        result.done.append(change)
    else:
        result.failed.append((change, ran.reason()))


def _remove_entry(path: str) -> str | None:
    """Remove a file or a whole directory (never following a symlink); None, or why not."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        return f"cannot remove it: {e.strerror or e}"
    return None


def _requirement(dist: str, entry: dict[str, str]) -> list[str]:
    if "editable" in entry:
        return ["-e", entry["editable"]]
    return [f"{dist}=={entry['version']}"]


def _shown(entry: dict[str, str] | None) -> str | None:
    if entry is None:
        return None
    if "editable" in entry:
        return f"{entry['version']} (editable {entry['editable']})"
    return entry["version"]
