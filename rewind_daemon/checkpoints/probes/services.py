"""The services probe: which services run and which start at boot.

systemd when it is PID 1, sysv init scripts (through `service` and
update-rc.d) otherwise. A service whose state cannot be read (no status
action, a hung or confused script) is recorded as "unknown" and never touched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ...errors import EXIT_INCOMPLETE, RwError
from ...progress import Progress, no_progress
from . import ProbeChange, ProbeRestore, have, run

INIT_D = Path("/etc/init.d")
RC_DIRS = [Path(f"/etc/rc{level}.d") for level in (2, 3, 4, 5)]
SYSTEMD_RUNTIME = Path("/run/systemd/system")  # exists only when systemd is PID 1
SERVICE_TIMEOUT = 30.0  # per service and action
# What `service --status-all` skips as well: not services, or not safe to poke.
NOT_SERVICES = {
    "README", "skeleton", "rc", "rcS", "single", "reboot", "halt", "killall",
    "functions", "bootclean.sh", "linuxconf", "kudzu",
}  # fmt: skip
RUNNING, STOPPED, UNKNOWN = "running", "stopped", "unknown"


def systemd_running() -> bool:
    return SYSTEMD_RUNTIME.is_dir()


class ServiceProbe:
    name = "services"

    def __init__(self, names: list[str] | None = None):
        self.names = list(names or [])

    def unavailable(self) -> str | None:
        if systemd_running():
            return None if have("systemctl") else "systemctl not found"
        return None if have("service") else "the sysv 'service' command is not installed"

    # -- capture ----------------------------------------------------------

    def capture(self, artifacts: Path | None = None, progress: Progress = no_progress) -> dict:
        if systemd_running():
            return {"init": "systemd", "services": self._systemd_states(), "artifacts": []}
        return {"init": "sysv", "services": self._sysv_states(), "artifacts": []}

    def _sysv_states(self) -> dict[str, dict]:
        names = self.names or sorted(n for n in os.listdir(INIT_D) if _is_init_script(n))
        enabled = _sysv_enabled()
        states = {}
        for name in names:
            script = INIT_D / name
            if script.is_file():
                states[name] = {"state": _sysv_status(name, script), "enabled": name in enabled}
        return states

    def _systemd_states(self) -> dict[str, dict]:
        names = self.names
        if not names:
            ran = run(
                ["systemctl", "list-unit-files", "--type=service", "--no-legend", "--no-pager"]
            )
            if not ran.ok:
                raise RwError(f"services: cannot list units: {ran.reason()}")
            units = [line.split()[0] for line in ran.stdout.splitlines() if line.strip()]
            names = [u for u in units if "@" not in u]  # templates are not services themselves
        if not names:
            return {}
        props = "--property=Id,LoadState,ActiveState,UnitFileState"
        ran = run(["systemctl", "show", props, "--no-pager", "--", *names])
        if not ran.ok:
            raise RwError(f"services: cannot read unit states: {ran.reason()}")
        states = {}
        for block in re.split(r"\n\s*\n", ran.stdout):
            unit = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            if unit.get("LoadState") in (None, "not-found"):
                continue
            active = unit.get("ActiveState", "")
            state = {"active": RUNNING, "reloading": RUNNING, "activating": RUNNING}.get(
                active, STOPPED if active in ("inactive", "failed", "deactivating") else UNKNOWN
            )
            file_state = unit.get("UnitFileState", "")
            enabled = {"enabled": True, "enabled-runtime": True, "disabled": False}.get(file_state)
            states[_unit_name(unit.get("Id", ""))] = {"state": state, "enabled": enabled}
        return dict(sorted(states.items()))

    # -- diff -------------------------------------------------------------

    def diff(self, recorded: dict, current: dict) -> list[ProbeChange]:
        rec, cur = recorded.get("services", {}), current.get("services", {})
        changes = []
        # A service that appeared since is left alone: removing what installed it does that.
        for name in sorted(rec):
            r, c = rec[name], cur.get(name)
            now = c["state"] if c else None
            if r["state"] != UNKNOWN and now != UNKNOWN and now != r["state"]:
                if r["state"] == RUNNING or now is not None:
                    action = "start" if r["state"] == RUNNING else "stop"
                    changes.append(ProbeChange(self.name, name, action, r["state"], now))
            was, is_ = r["enabled"], (c["enabled"] if c else None)
            if was is not None and was != is_ and (is_ is not None or was):
                action = "enable" if was else "disable"
                changes.append(ProbeChange(self.name, name, action, _boot(was), _boot(is_)))
        return sorted(changes, key=lambda c: (c.item, c.action))

    # -- restore ----------------------------------------------------------

    def restore(self, recorded: dict, current: dict, artifacts: Path | None = None) -> ProbeRestore:
        changes = self.diff(recorded, current)
        result = ProbeRestore()
        if not changes:
            return result
        reason = self.unavailable()
        if reason:
            raise RwError(f"services: cannot restore: {reason}", EXIT_INCOMPLETE)
        if os.geteuid() != 0:
            result.failed = [(c, "not root: cannot change services") for c in changes]
            return result
        systemd = systemd_running()
        for change in changes:
            failure = _systemd_apply(change) if systemd else _sysv_apply(change)
            if failure is None:
                result.done.append(change)
            else:
                result.failed.append((change, failure))
        return result


def _boot(enabled: bool | None) -> str | None:
    return None if enabled is None else "enabled" if enabled else "disabled"


def _unit_name(unit: str) -> str:
    return unit[: -len(".service")] if unit.endswith(".service") else unit


def _is_init_script(name: str) -> bool:
    if name in NOT_SERVICES or name.startswith(".") or re.search(r"\.(dpkg|ucf)-", name):
        return False
    path = INIT_D / name
    return path.is_file() and os.access(path, os.X_OK)


def _sysv_status(name: str, script: Path) -> str:
    try:
        text = script.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return UNKNOWN
    if "status" not in text and "init-d-script" not in text:
        return UNKNOWN  # no status action; asking would only run some other code path
    ran = run(["service", name, "status"], timeout=SERVICE_TIMEOUT)
    if ran.returncode is None or "usage:" in (ran.stdout + ran.stderr).lower():
        return UNKNOWN
    # LSB: 0 running, 1-3 dead or not running, 4 status unknown.
    return RUNNING if ran.returncode == 0 else UNKNOWN if ran.returncode == 4 else STOPPED


def _sysv_enabled() -> set[str]:
    """Scripts with a start link in a multi-user runlevel."""
    enabled = set()
    for rc in RC_DIRS:
        try:
            entries = list(rc.iterdir())
        except OSError:
            continue
        for link in entries:
            if link.name.startswith("S"):
                try:
                    target = os.readlink(link)
                except OSError:
                    continue
                enabled.add(os.path.basename(target))
    return enabled


def _sysv_apply(change: ProbeChange) -> str | None:
    name = change.item
    if not (INIT_D / name).is_file():
        return f"{INIT_D / name} does not exist"
    if change.action in ("start", "stop"):
        ran = run(["service", name, change.action], timeout=SERVICE_TIMEOUT)
    else:
        if change.action == "enable" and not any(_links(rc, name) for rc in RC_DIRS):
            # `enable` only flips existing links; a script never set up needs them made.
            made = run(["update-rc.d", name, "defaults"], timeout=SERVICE_TIMEOUT)
            if not made.ok:
                return made.reason()
        ran = run(["update-rc.d", name, change.action], timeout=SERVICE_TIMEOUT)
    return None if ran.ok else ran.reason()


def _links(rc: Path, name: str) -> list[str]:
    try:
        return [e for e in os.listdir(rc) if re.fullmatch(rf"[SK]\d\d{re.escape(name)}", e)]
    except OSError:
        return []


def _systemd_apply(change: ProbeChange) -> str | None:
    ran = run(["systemctl", change.action, "--", change.item], timeout=SERVICE_TIMEOUT)
    return None if ran.ok else ran.reason()
