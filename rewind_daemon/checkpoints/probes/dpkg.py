"""The dpkg probe: installed packages, their versions and apt's manual/auto marks.

Restoring an exact version needs its .deb, and after an upgrade the old one is
usually nowhere to be found, so a capture with an artifacts directory keeps a
.deb of every installed package: from apt's cache when it is there, otherwise
rebuilt from the installed files the way dpkg-repack does it.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

from ...errors import EXIT_INCOMPLETE, EXIT_PROBLEM, RwError
from ...progress import Progress, no_progress
from . import CHANGE_TIMEOUT, ProbeChange, ProbeRestore, Ran, have, run

DPKG_INFO = Path("/var/lib/dpkg/info")
APT_ARCHIVES = Path("/var/cache/apt/archives")
EXTENDED_STATES = Path("/var/lib/apt/extended_states")
DPKG_ENV = {"DEBIAN_FRONTEND": "noninteractive"}
# Keep the configuration files as they are now; file checkpoints own their content.
CONF_OPTIONS = ["--force-confdef", "--force-confold"]
SCRIPTS = ("preinst", "postinst", "prerm", "postrm", "config")
CONTROL_DATA = ("templates", "triggers", "shlibs", "symbols", "md5sums")
# Fields of the status database that do not belong in a binary package.
STATUS_ONLY = {"status", "config-version", "conffiles"}
INSTALLS = ("install", "reinstall", "configure")
INSTALLED = "installed"
CONFIG_FILES = "config-files"
# Installed, with trigger processing still owed: configuring finishes them.
TRIGGERS = ("triggers-awaited", "triggers-pending")


def deb_file_name(name: str, version: str, arch: str) -> str:
    """The file name apt uses in its cache, so both places can be searched alike."""
    return f"{name}_{version.replace(':', '%3a')}_{arch}.deb"


class DpkgProbe:
    name = "dpkg"

    def __init__(self, *, keep_debs: Callable[[str], bool] | None = None):
        # Which packages (by name) a capture keeps a .deb of; None = all of them.
        self.keep_debs = keep_debs
        self._native: str | None = None

    def unavailable(self) -> str | None:
        return None if have("dpkg-query") else "dpkg-query not found"

    # -- capture ----------------------------------------------------------

    def capture(self, artifacts: Path | None = None, progress: Progress = no_progress) -> dict:
        states = self._states()
        auto = self._auto_marked()
        packages: dict[str, dict] = {}
        for key, (version, status) in sorted(states.items()):
            entry: dict = {"version": version, "manual": self._apt_key(key) not in auto}
            if status != INSTALLED:
                entry["status"] = status
            packages[key] = entry
        # What dpkg --audit already found wrong: a rollback answers only for the rest.
        state: dict = {"packages": packages, "audit": sorted(self._audit())}
        installed = {k: v for k, (v, st) in states.items() if _target(st) == INSTALLED}
        kept = self._keep(installed, artifacts, progress) if artifacts is not None else []
        state["artifacts"] = kept
        return state

    def _states(self, keys: Iterable[str] = ()) -> dict[str, tuple[str, str]]:
        """name:arch -> (version, dpkg status) of every package dpkg knows of in
        any state but not-installed (of `keys`, or all)."""
        keys = list(keys)
        fmt = "${Package}\t${Architecture}\t${Version}\t${Status}\n"
        ran = run(["dpkg-query", "-W", f"-f={fmt}", *keys])
        # With named packages, dpkg-query exits 1 when some are unknown; that is an answer.
        if ran.returncode is None or (ran.returncode != 0 and not keys):
            raise RwError(f"dpkg: cannot list packages: {ran.reason()}", EXIT_PROBLEM)
        found = {}
        for line in ran.stdout.splitlines():
            parts = line.split("\t")
            status = parts[3].split()[-1:] if len(parts) == 4 else []
            if status and status != ["not-installed"]:
                found[f"{parts[0]}:{parts[1]}"] = (parts[2], status[0])
        return found

    def _installed(self, keys: Iterable[str] = ()) -> dict[str, str]:
        """name:arch -> version of the packages fully installed (of `keys`, or all)."""
        return {k: v for k, (v, status) in self._states(keys).items() if status == INSTALLED}

    def _audit(self) -> dict[str, str]:
        """Package name -> what dpkg --audit says is wrong with it."""
        ran = run(["dpkg", "--audit"])
        found: dict[str, str] = {}
        header: list[str] = []
        for line in ran.stdout.splitlines():
            if not line.strip():
                header = []
            elif line[0] in " \t" and line.split():
                text = " ".join(header).split(".")[0]
                text = text.replace("The following packages are ", "").replace("  ", " ")
                found.setdefault(line.split()[0], text.strip(" :") or "named by dpkg --audit")
            else:
                header.append(line.strip())
        return found

    def _native_arch(self) -> str:
        if self._native is None:
            ran = run(["dpkg", "--print-architecture"])
            self._native = ran.stdout.strip() if ran.ok else ""
        return self._native

    def _apt_key(self, key: str) -> str:
        """apt records architecture-independent packages under the native architecture."""
        name, arch = key.rsplit(":", 1)
        return f"{name}:{self._native_arch()}" if arch == "all" else key

    def _auto_marked(self) -> set[str]:
        """name:arch of the packages apt marks as automatically installed.

        Read from apt's own file, as apt-mark does: apt-mark takes seconds to
        load apt's cache, and a rollback asks four times."""
        native = self._native_arch()
        try:
            text = EXTENDED_STATES.read_text(encoding="utf-8", errors="replace")
        except OSError:
            ran = run(["apt-mark", "showauto"]) if have("apt-mark") else None
            names = ran.stdout.split() if ran is not None and ran.ok else []
            return {n if ":" in n else f"{n}:{native}" for n in names}
        auto = set()
        for stanza in _stanzas(text):
            if stanza.get("Auto-Installed") == "1" and "Package" in stanza:
                auto.add(f"{stanza['Package']}:{stanza.get('Architecture', native)}")
        return auto

    def _keep(
        self, versions: dict[str, str], artifacts: Path, progress: Progress = no_progress
    ) -> list[str]:
        """Make sure artifacts holds a .deb of each installed package; return their names."""
        kept, to_build = [], []
        for key, version in sorted(versions.items()):
            name, arch = key.rsplit(":", 1)
            file_name = deb_file_name(name, version, arch)
            target = artifacts / file_name
            if target.exists():
                kept.append(file_name)
            elif self.keep_debs is not None and not self.keep_debs(name):
                continue
            elif (APT_ARCHIVES / file_name).is_file() and _place(APT_ARCHIVES / file_name, target):
                kept.append(file_name)
            else:
                to_build.append((key, target))
        if to_build:
            stanzas = _status_stanzas([key for key, _ in to_build])
            diversions = _diversions()

            def build(job: tuple[str, Path]) -> str | None:
                key, target = job
                stanza = stanzas.get(key)
                if stanza is None or not _repack(key, stanza, diversions, target):
                    return None
                return target.name

            what = "checkpoint, .debs of installed packages rebuilt"
            with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
                for done, built in enumerate(pool.map(build, to_build), 1):
                    progress(what, done, len(to_build))
                    if built:
                        kept.append(built)
        return sorted(kept)

    # -- diff -------------------------------------------------------------

    def diff(self, recorded: dict, current: dict) -> list[ProbeChange]:
        rec, cur = recorded.get("packages", {}), current.get("packages", {})
        changes = []
        for key in sorted(set(rec) | set(cur)):
            r, c = rec.get(key), cur.get(key)
            want = _target(_status(r)) if r is not None else None
            have = _status(c) if c is not None else None
            if want == "":
                continue  # recorded half-done: no state anyone would go back to
            if want is None:
                changes.append(ProbeChange(self.name, key, "remove", None, _shown(c)))
            elif want == CONFIG_FILES:
                if have != CONFIG_FILES:
                    changes.append(ProbeChange(self.name, key, "deinstall", _shown(r), _shown(c)))
            elif c is None or have == CONFIG_FILES:
                changes.append(ProbeChange(self.name, key, "install", r["version"], _shown(c)))
            elif r["version"] != c["version"] or have == "half-installed":
                changes.append(ProbeChange(self.name, key, "reinstall", r["version"], _shown(c)))
            elif have != INSTALLED:
                changes.append(ProbeChange(self.name, key, "configure", r["version"], _shown(c)))
            elif r["manual"] != c["manual"]:
                action = "mark-manual" if r["manual"] else "mark-auto"
                changes.append(
                    ProbeChange(self.name, key, action, _mark(r["manual"]), _mark(c["manual"]))
                )
        return changes

    # -- restore ----------------------------------------------------------

    def restore(self, recorded: dict, current: dict, artifacts: Path | None = None) -> ProbeRestore:
        changes = self.diff(recorded, current)
        # With nothing to change, dpkg's own check may still find a package damaged.
        if not changes and ("audit" not in recorded or os.geteuid() != 0):
            return ProbeRestore()
        if not have("dpkg"):
            raise RwError("dpkg: dpkg not found, cannot restore packages", EXIT_INCOMPLETE)
        if os.geteuid() != 0:
            return ProbeRestore([], [(c, "not root: cannot change packages") for c in changes])
        outcome: dict[ProbeChange, str | None] = {}
        removals = [c for c in changes if c.action == "remove"]
        installs = [c for c in changes if c.action in INSTALLS]
        purge_failed = self._purge([c.item for c in removals])
        # A package stopped while being configured (or owed its triggers) is
        # finished in place; only what that does not mend is installed again.
        configured = self._configure([c for c in installs if c.action == "configure"])
        unmended = [c for c in installs if c.action != "configure" or c not in configured]
        outcome.update(self._install(unmended, artifacts))
        # A package added since may be needed by a newer version that was just replaced.
        if purge_failed:
            purge_failed = self._purge(list(purge_failed))
        outcome.update({c: purge_failed.get(c.item) for c in removals})
        for change in configured:
            outcome[change] = None
        outcome.update(self._deinstall([c for c in changes if c.action == "deinstall"], artifacts))
        # A fresh install is manual to apt, and a stale auto mark may linger from a
        # removal done with dpkg, so every reinstalled package gets its recorded mark.
        recorded_pkgs = recorded.get("packages", {})
        marks = {c: recorded_pkgs[c.item]["manual"] for c in installs if outcome[c] is None}
        marks.update({c: c.action == "mark-manual" for c in changes if c.action.startswith("mark")})
        for change, reason in self._mark(marks).items():
            prefix = f"installed {change.recorded}, but " if change.action in INSTALLS else ""
            outcome[change] = prefix + reason
        # dpkg's own check: a package it finds damaged now (not at the checkpoint)
        # that was installed then is reinstalled; what it still finds is reported.
        # (A checkpoint taken before rw kept dpkg's audit cannot tell.)
        by_name = {c.item.rsplit(":", 1)[0]: c for c in changes}
        repairs = []
        problems = self._new_problems(recorded)
        for name in problems:
            bare = name.rsplit(":", 1)[0]
            keys = [k for k in recorded_pkgs if k.rsplit(":", 1)[0] == bare]
            if bare in by_name or not keys:
                continue
            if _target(_status(recorded_pkgs[keys[0]])) == INSTALLED:
                version = recorded_pkgs[keys[0]]["version"]
                repair = ProbeChange(self.name, keys[0], "repair", version, f"{version} (damaged)")
                repairs.append(repair)
                by_name[bare] = repair
        if repairs:
            outcome.update(self._install(repairs, artifacts))
            changes += repairs
            problems = self._new_problems(recorded)
        extra: list[tuple[ProbeChange, str]] = []
        for name, problem in sorted(problems.items()):
            why = f"dpkg --audit: {problem}"
            changed = by_name.get(name.rsplit(":", 1)[0])
            if changed is not None:
                outcome[changed] = outcome.get(changed) or why
            else:
                keys = [k for k in recorded_pkgs if k.rsplit(":", 1)[0] == name] or [name]
                then = _shown(recorded_pkgs.get(keys[0]))
                extra.append((ProbeChange(self.name, keys[0], "repair", then, "damaged"), why))
        result = ProbeRestore(failed=extra)
        for change in changes:
            failure = outcome.get(change)
            if failure is None:
                result.done.append(change)
            else:
                result.failed.append((change, failure))
        return result

    def _new_problems(self, recorded: dict) -> dict[str, str]:
        """What dpkg --audit finds now that it did not when `recorded` was taken."""
        if "audit" not in recorded:
            return {}
        known = set(recorded["audit"])
        return {
            name: problem
            for name, problem in self._audit().items()
            if name not in known and name.rsplit(":", 1)[0] not in known
        }

    def _purge(self, keys: list[str]) -> dict[str, str]:
        """Purge packages, also those dpkg was stopped in the middle of installing
        (which it otherwise wants reinstalled first); return the reason for each
        one still there."""
        if not keys:
            return {}
        argv = ["dpkg", "--purge", "--force-remove-reinstreq"]
        ran = _change([*argv, *keys], env=DPKG_ENV)
        pending = sorted(self._states(keys))
        reasons = {key: _dpkg_reason(ran, key) for key in pending}
        # One at a time, in rounds, for the order dpkg refused to find on its own.
        progress = bool(pending) and len(keys) > 1
        while progress:
            progress = False
            for key in list(pending):
                ran = _change([*argv, key], env=DPKG_ENV)
                if self._states([key]):
                    reasons[key] = _dpkg_reason(ran, key)
                else:
                    pending.remove(key)
                    progress = True
        return {key: reasons[key] for key in pending}

    def _configure(self, changes: list[ProbeChange]) -> set[ProbeChange]:
        """Configure packages left unpacked, half-configured or owing triggers;
        return those now installed at their recorded version."""
        if not changes:
            return set()
        argv = ["dpkg", "--configure", *CONF_OPTIONS, *[c.item for c in changes]]
        _change(argv, env=DPKG_ENV)
        now = self._installed(c.item for c in changes)
        return {c for c in changes if now.get(c.item) == c.recorded}

    def _deinstall(
        self, changes: list[ProbeChange], artifacts: Path | None
    ) -> dict[ProbeChange, str | None]:
        """Back to configuration files only: remove the package, installing it
        first from its .deb if it is gone altogether."""
        outcome: dict[ProbeChange, str | None] = {}
        for change in changes:
            version = (change.recorded or "").split(" ", 1)[0]
            if change.current is None:
                install = ProbeChange(self.name, change.item, "install", version, None)
                why = self._install([install], artifacts)[install]
                if why is not None:
                    outcome[change] = f"its configuration files need the package first: {why}"
                    continue
            ran = _change(["dpkg", "--remove", change.item], env=DPKG_ENV)
            state = self._states([change.item]).get(change.item)
            ok = state is not None and state[1] == CONFIG_FILES
            outcome[change] = None if ok else _dpkg_reason(ran, change.item)
        return outcome

    def _install(
        self, installs: list[ProbeChange], artifacts: Path | None
    ) -> dict[ProbeChange, str | None]:
        """Install the recorded versions; return None or the reason for each change."""
        outcome: dict[ProbeChange, str | None] = {}
        debs: dict[ProbeChange, Path] = {}
        for change in installs:
            name, arch = change.item.rsplit(":", 1)
            file_name = deb_file_name(name, change.recorded or "", arch)
            places = [d for d in (artifacts, APT_ARCHIVES) if d is not None]
            found = [d / file_name for d in places if (d / file_name).is_file()]
            if found:
                debs[change] = found[0]
        if debs:
            argv = ["dpkg", "--install", *CONF_OPTIONS, *map(str, debs.values())]
            ran = _change(argv, env=DPKG_ENV)
            now = self._installed(c.item for c in debs)
            for change in debs:
                ok = now.get(change.item) == change.recorded
                outcome[change] = None if ok else _dpkg_reason(ran, change.item)
        for change in installs:
            if change not in debs:
                outcome[change] = self._apt_install(change)
        return outcome

    def _apt_install(self, change: ProbeChange) -> str | None:
        name, arch = change.item.rsplit(":", 1)
        missing = f"no .deb of {name} {change.recorded} available"
        if not have("apt-get"):
            return f"{missing} (not kept, not in apt's cache, no apt-get)"
        apt_name = name if arch in ("all", self._native_arch()) else change.item
        argv = ["apt-get", "install", "-y", "--allow-downgrades", "--no-remove"]
        argv += ["--no-install-recommends"]
        argv += [f"-o=Dpkg::Options::={option}" for option in CONF_OPTIONS]
        ran = _change([*argv, f"{apt_name}={change.recorded}"], env=DPKG_ENV)
        if self._installed([change.item]).get(change.item) == change.recorded:
            return None
        return f"{missing} ({ran.reason()})"

    def _mark(self, marks: dict[ProbeChange, bool]) -> dict[ProbeChange, str]:
        """Set apt's manual (True) or auto mark; return the reason for each failure."""
        if not marks:
            return {}
        if not have("apt-mark"):
            explicit = [c for c in marks if c.action.startswith("mark")]
            return {c: "apt-mark not found" for c in explicit}
        failed = {}
        for manual in (True, False):
            group = [c for c, m in marks.items() if m == manual]
            if group:
                argv = ["apt-mark", _mark(manual), *[c.item for c in group]]
                ran = _change(argv)
                if not ran.ok:
                    failed.update({c: ran.reason() for c in group})
        return failed


LOCK_WAIT = 120.0  # seconds to wait for another dpkg or apt to finish
_LOCK_MESSAGES = ("frontend lock", "database is locked", "Could not get lock", "lock-frontend")


def _change(argv: list[str], env: dict[str, str] | None = None) -> Ran:
    """Run a command that changes packages, waiting while another dpkg or apt
    holds the package database lock (as apt itself does)."""
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        ran = run(argv, timeout=CHANGE_TIMEOUT, env=env)
        text = ran.stderr + ran.stdout
        held = not ran.ok and any(m in text for m in _LOCK_MESSAGES)
        if not held or time.monotonic() > deadline:
            return ran
        time.sleep(1.0)


def _mark(manual: bool) -> str:
    return "manual" if manual else "auto"


def _status(entry: dict) -> str:
    return entry.get("status", INSTALLED)  # (checkpoints before states were kept)


def _target(status: str) -> str:
    """The state a restore brings a package recorded in `status` back to:
    installed, config-files, or "" (a half-done state, left alone)."""
    if status == INSTALLED or status in TRIGGERS:
        return INSTALLED
    # Half-installed, unpacked, half-configured: where dpkg leaves a package it
    # was stopped in the middle of (killed, or a maintainer script failed).
    return CONFIG_FILES if status == CONFIG_FILES else ""


def _shown(entry: dict | None) -> str | None:
    """A package's version, with its state when that is not plainly installed."""
    if entry is None:
        return None
    status = _status(entry)
    return entry["version"] if status == INSTALLED else f"{entry['version']} ({status})"


def _stanzas(text: str) -> list[dict[str, str]]:
    """Parse deb822 text (as dpkg writes it); continuation lines are kept as they are."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, ""
        elif line[0] in " \t" and last:
            current[last] += "\n" + line
        elif ":" in line:
            key, value = line.split(":", 1)
            last = key.strip()
            current[last] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def _dpkg_reason(ran: Ran, key: str) -> str:
    """The dpkg message about one package, joined on one line, else the last error."""
    name = key.rsplit(":", 1)[0]
    lines = (ran.stderr + "\n" + ran.stdout).splitlines()
    for i, line in enumerate(lines):
        if line.startswith("dpkg: ") and re.search(
            rf"(?<![\w.+-]){re.escape(name)}(?![\w.+-])", line
        ):
            block = [line[len("dpkg: ") :]]
            block += [ln.strip() for ln in lines[i + 1 :] if ln[:1] in (" ", "\t")][:3]
            return "dpkg: " + " ".join(block)
    if ran.ok:
        return f"dpkg: {key} is not installed at the recorded version afterwards"
    return ran.reason()


def _place(source: Path, target: Path) -> bool:
    """Hard-link (or copy) source to target atomically; False if that fails."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        return True
    except OSError:
        tmp.unlink(missing_ok=True)
        return False


def _status_stanzas(keys: list[str]) -> dict[str, dict[str, str]]:
    ran = run(["dpkg-query", "--status", *keys])
    found = {}
    for stanza in _stanzas(ran.stdout):
        if "Package" in stanza and "Architecture" in stanza:
            found[f"{stanza['Package']}:{stanza['Architecture']}"] = stanza
    return found


def _diversions() -> dict[str, tuple[str, str | None]]:
    """path -> (where the diverted file now is, the diverting package or None if local)."""
    ran = run(["dpkg-divert", "--list"])
    found: dict[str, tuple[str, str | None]] = {}
    pattern = re.compile(r"^(?:local )?diversion of (.+) to (.+?)(?: by (\S+))?$")
    for line in ran.stdout.splitlines():
        match = pattern.match(line)
        if match:
            found[match.group(1)] = (match.group(2), match.group(3))
    return found


def _info_path(key: str, suffix: str) -> Path:
    name, arch = key.rsplit(":", 1)
    qualified = DPKG_INFO / f"{name}:{arch}.{suffix}"
    if qualified.exists() or (DPKG_INFO / f"{name}:{arch}.list").exists():
        return qualified
    return DPKG_INFO / f"{name}.{suffix}"


def _repack(
    key: str, stanza: dict[str, str], diversions: dict[str, tuple[str, str | None]], target: Path
) -> bool:
    """Rebuild the .deb of an installed package from its files; False if that fails."""
    name = key.rsplit(":", 1)[0]
    tmp: Path | None = None
    try:
        # Not TemporaryDirectory: its cleanup may chmod what it cannot delete, and
        # some of these files are hard links to the installed ones.
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".repack-"))
        paths = _info_path(key, "list").read_text(encoding="utf-8").splitlines()
        root = tmp / "root"
        root.mkdir()
        _copy_tree(name, [p for p in paths if p.startswith("/") and p != "/."], diversions, root)
        _write_control(key, stanza, root)
        deb = tmp / "out.deb"
        argv = ["dpkg-deb", "-Zgzip", "-z6", "--build", str(root), str(deb)]
        if os.geteuid() != 0:
            # Copies belong to us; packaged files are root's in all but a few packages.
            argv.insert(1, "--root-owner-group")
        if not run(argv, timeout=CHANGE_TIMEOUT).ok:
            return False
        os.replace(deb, target)
        return True
    except (OSError, UnicodeDecodeError):
        return False
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _copy_tree(
    name: str, paths: list[str], diversions: dict[str, tuple[str, str | None]], root: Path
) -> None:
    """Recreate the package's files under root: hard links where possible, else copies.

    A listed path that is a parent of other listed paths becomes a real
    directory even if it is a symlink here (merged /usr), so nothing written
    under root can ever land outside it.
    """
    parents = {os.path.dirname(p) for p in paths}
    for path in paths:
        source = path
        diverted = diversions.get(path)
        if diverted and diverted[1] != name:
            source = diverted[0]
        dest = root / path.lstrip("/")
        try:
            info = os.stat(source) if path in parents else os.lstat(source)
        except FileNotFoundError:
            continue  # removed locally (or path-excluded); dpkg-repack skips these too
        if os.path.lexists(dest):
            continue
        _real_dirs(root, dest.parent)
        if stat.S_ISDIR(info.st_mode):
            dest.mkdir()
        elif stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(source), dest)
        elif stat.S_ISREG(info.st_mode):
            try:
                os.link(source, dest)
                continue  # shares the inode, so mode and owner are already right
            except OSError:
                shutil.copy2(source, dest)
        else:
            continue
        if os.geteuid() == 0:
            os.lchown(dest, info.st_uid, info.st_gid)
        if not stat.S_ISLNK(info.st_mode):
            os.chmod(dest, stat.S_IMODE(info.st_mode))


def _real_dirs(root: Path, directory: Path) -> None:
    """Create directory under root, refusing to go anywhere through a symlink."""
    existing = directory
    while not os.path.lexists(existing):
        existing = existing.parent
    inside = os.path.realpath(existing) + os.sep
    if not inside.startswith(os.path.realpath(root) + os.sep):
        raise OSError(f"{existing} leads out of the build tree")
    directory.mkdir(parents=True, exist_ok=True)


def _write_control(key: str, stanza: dict[str, str], root: Path) -> None:
    debian = root / "DEBIAN"
    debian.mkdir(mode=0o755)
    debian.chmod(0o755)
    fields = [f"{k}: {v}" for k, v in stanza.items() if k.lower() not in STATUS_ONLY]
    (debian / "control").write_text("\n".join(fields) + "\n", encoding="utf-8")
    conffiles = []
    for line in stanza.get("Conffiles", "").splitlines():
        parts = line.split()
        # Entries flagged obsolete or remove-on-upgrade are not shipped any more.
        if len(parts) == 2 and (root / parts[0].lstrip("/")).exists():
            conffiles.append(parts[0])
    if conffiles:
        (debian / "conffiles").write_text("\n".join(conffiles) + "\n", encoding="utf-8")
    for part in SCRIPTS + CONTROL_DATA:
        source = _info_path(key, part)
        if source.is_file():
            shutil.copyfile(source, debian / part)
            (debian / part).chmod(0o755 if part in SCRIPTS else 0o644)
