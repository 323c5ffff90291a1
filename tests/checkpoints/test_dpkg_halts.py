"""A guarded install halted while dpkg is in the middle of it, in each phase,
rolled back for real: tiny .debs whose maintainer scripts stop (or whose
configuration fails) while `rw guard --packages` watches, then the
rollback, `dpkg --audit` and the package states compared with the checkpoint.

Needs root and dpkg; every package has a random name and is purged afterwards
(the rwtest_packages fixture).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rewind_daemon.checkpoints.probes.dpkg import DpkgProbe, deb_file_name

from ..conftest import RW, write_config
from .test_probes import (
    needs_root_dpkg,
    rwtest_packages,  # noqa: F401 - a fixture
    sh,
    venv,  # noqa: F401 - a fixture
)

pytestmark = [needs_root_dpkg, pytest.mark.slow]

# Halts once: the script removes the flag first, so a rollback that runs the
# same script again goes through.
HALTING = """\
#!/bin/sh
if [ "$1" = "{arg}" ] && [ -e {flag} ]; then
    rm -f {flag}
    echo "ERROR: rwtest halting in {script} $1"
    exec sleep 600
fi
exit 0
"""


def make_deb(
    out: Path,
    name: str,
    version: str,
    *,
    scripts: dict[str, str] | None = None,
    depends: str = "",
    triggers: str = "",
    trigger_dir: str = "",
    conffile: bool = False,
) -> Path:
    """An arch-all package owning /usr/share/NAME/file (and a file in trigger_dir)."""
    root = out / f"{name}-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    share = root / "usr" / "share" / name
    share.mkdir(parents=True)
    (share / "file").write_text(f"{name} {version}\n")
    if trigger_dir:
        (root / trigger_dir.lstrip("/")).mkdir(parents=True)
        (root / trigger_dir.lstrip("/") / name).write_text("x\n")
    control = (
        f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: rw tests <rw@example.invalid>\nDescription: rw halt test\n"
    )
    if depends:
        control += f"Depends: {depends}\n"
    (root / "DEBIAN" / "control").write_text(control)
    if conffile:
        (root / "etc").mkdir()
        (root / "etc" / f"{name}.conf").write_text("setting = 1\n")
        (root / "DEBIAN" / "conffiles").write_text(f"/etc/{name}.conf\n")
    if triggers:
        (root / "DEBIAN" / "triggers").write_text(triggers + "\n")
    for script, text in (scripts or {}).items():
        (root / "DEBIAN" / script).write_text(text)
        (root / "DEBIAN" / script).chmod(0o755)
    deb = out / deb_file_name(name, version, "all")
    sh("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb))
    return deb


def halting(script: str, arg: str, flag: Path) -> dict[str, str]:
    return {script: HALTING.format(script=script, arg=arg, flag=flag)}


def states(prefix: str) -> dict[str, str]:
    """name -> "version status" of every package with the prefix that dpkg knows."""
    ran = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${Version} ${Status}\n", f"{prefix}-*"],
        capture_output=True,
        text=True,
    )
    found = {}
    for line in ran.stdout.splitlines():
        name, version, *status = line.split()
        if status[-1] != "not-installed":
            found[name] = f"{version} {' '.join(status)}"
    return found


def audit() -> str:
    return subprocess.run(["dpkg", "--audit"], capture_output=True, text=True).stdout


@pytest.fixture
def home(rw_home, venv):  # noqa: F811
    # One small venv for pip, so the checkpoint is quick and no other pip is touched.
    write_config(
        rw_home, f"[daemon]\nautostart = false\n[checkpoint]\npip = ['{venv}/bin/python']\n"
    )
    return rw_home


@pytest.fixture
def flag(tmp_path):
    path = tmp_path / "halt-once"
    path.touch()
    return path


def guard(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RW, "guard", "--packages", "--no-services", "--timeout", "60", "--", *command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


def rolled_back(proc: subprocess.CompletedProcess, prefix: str, before: dict, *lines: str):
    """The run halted, the report says what was reverted, and dpkg agrees."""
    assert proc.returncode == 1, proc.stderr
    assert "Checkpoint Status: Rollback completed successfully" in proc.stderr, proc.stderr
    assert "nothing had changed" not in proc.stderr
    for line in lines:
        assert line in proc.stderr, proc.stderr
    assert audit() == ""
    assert states(prefix) == before


def test_halted_in_preinst_half_installed_is_purged(home, tmp_path, rwtest_packages, flag):  # noqa: F811
    prefix = rwtest_packages
    name = f"{prefix}-pre"
    deb = make_deb(tmp_path, name, "1.0", scripts=halting("preinst", "install", flag))
    proc = guard("dpkg", "-i", str(deb))
    assert "ERROR: rwtest halting in preinst install" in proc.stderr
    rolled_back(proc, prefix, {}, f"dpkg: {name}:all 1.0 (half-installed) -> absent (remove)")
    assert not Path(f"/usr/share/{name}").exists()


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get")
def test_apt_get_halted_at_unpacking_is_purged(home, tmp_path, rwtest_packages):  # noqa: F811
    """The run of the issue: apt-get halted on its `Unpacking` line, while dpkg
    writes the package's files (a big one, so that the halt comes before the end)."""
    prefix = rwtest_packages
    name = f"{prefix}-apt"
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr" / "share" / name).mkdir(parents=True)
    (root / "usr" / "share" / name / "blob").write_bytes(os.urandom(30_000_000))
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: rw tests <rw@example.invalid>\nDescription: rw halt test\n"
    )
    deb = tmp_path / deb_file_name(name, "1.0", "all")
    sh("dpkg-deb", "--root-owner-group", "-Znone", "--build", str(root), str(deb))
    proc = subprocess.run(
        [RW, "guard", "--packages", "--no-services", "--strict", "--expect", "^(?!Unpacking)"]
        + ["--", "apt-get", "install", "-y", str(deb)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert re.search(rf"Trigger: line \d+: Unpacking {name} \(1\.0\) \.\.\.", proc.stderr)
    state = re.search(rf"dpkg: {name}:all 1\.0 \(([a-z-]+)\) -> absent \(remove\)", proc.stderr)
    assert state is not None, proc.stderr  # the state dpkg was stopped in, not "nothing"
    rolled_back(proc, prefix, {})
    assert not Path(f"/usr/share/{name}").exists()


def test_unpacked_but_not_configurable_is_purged(home, tmp_path, rwtest_packages):  # noqa: F811
    prefix = rwtest_packages
    name = f"{prefix}-unp"
    deb = make_deb(tmp_path, name, "1.0", depends=f"{prefix}-missing")
    proc = guard("dpkg", "-i", str(deb))
    assert "dependency problems" in proc.stdout
    rolled_back(proc, prefix, {}, f"dpkg: {name}:all 1.0 (unpacked) -> absent (remove)")


def test_halted_in_postinst_half_configured_is_purged(home, tmp_path, rwtest_packages, flag):  # noqa: F811
    prefix = rwtest_packages
    name = f"{prefix}-post"
    deb = make_deb(tmp_path, name, "1.0", scripts=halting("postinst", "configure", flag))
    proc = guard("dpkg", "-i", str(deb))
    assert "ERROR: rwtest halting in postinst configure" in proc.stderr
    rolled_back(proc, prefix, {}, f"dpkg: {name}:all 1.0 (half-configured) -> absent (remove)")


def test_halted_in_trigger_processing(home, tmp_path, rwtest_packages, flag):  # noqa: F811
    """The interested package, installed at the checkpoint, is left half-configured
    by its `triggered` run; it is configured again, the activating one purged."""
    prefix = rwtest_packages
    watcher, newcomer = f"{prefix}-watcher", f"{prefix}-newcomer"
    trigger_dir = f"/usr/share/{prefix}-trig"
    w = make_deb(
        tmp_path, watcher, "1.0",
        scripts=halting("postinst", "triggered", flag), triggers=f"interest {trigger_dir}",
    )  # fmt: skip
    n = make_deb(tmp_path, newcomer, "1.0", trigger_dir=trigger_dir)
    sh("dpkg", "-i", str(w))
    before = states(prefix)
    assert before == {watcher: "1.0 install ok installed"}
    proc = guard("dpkg", "-i", str(n))
    assert "ERROR: rwtest halting in postinst triggered" in proc.stderr
    rolled_back(
        proc, prefix, before,
        f"dpkg: {watcher}:all 1.0 (half-configured) -> 1.0 (configure)",
        f"dpkg: {newcomer}:all 1.0 -> absent (remove)",
    )  # fmt: skip


def test_triggers_pending_and_awaited(home, tmp_path, rwtest_packages):  # noqa: F811
    """dpkg stopped before it processed the triggers an install activated."""
    prefix = rwtest_packages
    watcher, newcomer = f"{prefix}-watcher", f"{prefix}-newcomer"
    trigger_dir = f"/usr/share/{prefix}-trig"
    w = make_deb(tmp_path, watcher, "1.0", triggers=f"interest {trigger_dir}")
    n = make_deb(tmp_path, newcomer, "1.0", trigger_dir=trigger_dir)
    sh("dpkg", "-i", str(w))
    before = states(prefix)
    proc = guard("sh", "-c", f"dpkg --no-triggers -i {n} && echo 'ERROR: stopped before triggers'")
    rolled_back(
        proc, prefix, before,
        f"dpkg: {watcher}:all 1.0 (triggers-pending) -> 1.0 (configure)",
        f"dpkg: {newcomer}:all 1.0 (triggers-awaited) -> absent (remove)",
    )  # fmt: skip


def test_an_upgrade_halted_half_way_goes_back_to_the_kept_version(
    home,
    tmp_path,
    rwtest_packages,  # noqa: F811
    flag,
):
    prefix = rwtest_packages
    name = f"{prefix}-up"
    old = make_deb(tmp_path, name, "1.0")
    new = make_deb(tmp_path, name, "2.0", scripts=halting("preinst", "upgrade", flag))
    sh("dpkg", "-i", str(old))
    before = states(prefix)
    # Kept by an earlier `rw checkpoint create --keep-debs` (rw's own .deb copies).
    kept = home / "data" / "debs"
    kept.mkdir(parents=True, mode=0o700)
    os.link(old, kept / old.name)
    os.unlink(old)
    proc = guard("dpkg", "-i", str(new))
    assert "ERROR: rwtest halting in preinst upgrade" in proc.stderr
    # (dpkg records the new version only once it is unpacked)
    rolled_back(proc, prefix, before, f"dpkg: {name}:all 1.0 (half-installed) -> 1.0 (reinstall)")
    assert Path(f"/usr/share/{name}/file").read_text() == f"{name} 1.0\n"


def test_a_rollback_without_the_old_deb_says_what_is_left(home, tmp_path, rwtest_packages, flag):  # noqa: F811
    prefix = rwtest_packages
    name = f"{prefix}-up"
    old = make_deb(tmp_path, name, "1.0")
    new = make_deb(tmp_path, name, "2.0", scripts=halting("postinst", "configure", flag))
    sh("dpkg", "-i", str(old))
    os.unlink(old)
    proc = guard("dpkg", "-i", str(new))
    assert proc.returncode == 3, proc.stderr
    assert "Rollback failed - manual intervention required" in proc.stderr
    assert "Reverted: nothing\n" in proc.stderr
    remains = proc.stderr.split("Remains (not as the checkpoint recorded it):")[1]
    assert f"dpkg: {name}:all 2.0 (half-configured) -> 1.0 (reinstall): no .deb of {name} 1.0" in (
        remains
    )


def test_probe_upgrade_killed_in_unpack_and_config_files(tmp_path, rwtest_packages):  # noqa: F811
    """Without rw guard: a .deb kept by the capture itself brings back a version
    whose upgrade dpkg was killed in the middle of, and a package recorded as
    removed (configuration files kept) goes back to just that."""
    prefix = rwtest_packages
    up, conf = f"{prefix}-up", f"{prefix}-conf"
    flag = tmp_path / "halt-once"
    make_deb(tmp_path, up, "1.0")
    new = make_deb(tmp_path, up, "2.0", scripts=halting("preinst", "upgrade", flag))
    sh("dpkg", "-i", str(tmp_path / deb_file_name(up, "1.0", "all")))
    conf_deb = make_deb(tmp_path, conf, "1.0", conffile=True)
    sh("dpkg", "-i", str(conf_deb))
    sh("dpkg", "--remove", conf)
    probe = DpkgProbe(keep_debs=lambda name: name.startswith(prefix))
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    recorded = probe.capture(artifacts)
    ours = {k: v for k, v in recorded["packages"].items() if k.startswith(prefix)}
    assert ours == {
        f"{conf}:all": {"version": "1.0", "manual": True, "status": "config-files"},
        f"{up}:all": {"version": "1.0", "manual": True},
    }
    assert recorded["artifacts"] == [deb_file_name(up, "1.0", "all")]
    os.unlink(tmp_path / deb_file_name(up, "1.0", "all"))
    before = states(prefix)

    flag.touch()
    dpkg = subprocess.Popen(
        ["dpkg", "-i", str(new)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert dpkg.stdout is not None
    for line in dpkg.stdout:
        if "rwtest halting" in line:
            break
    os.killpg(dpkg.pid, 9)
    dpkg.wait()
    sh("dpkg", "--purge", conf)
    (artifacts / conf_deb.name).write_bytes(conf_deb.read_bytes())  # its .deb, kept elsewhere
    assert states(prefix) == {up: "1.0 install reinstreq half-installed"}

    result = probe.restore(recorded, probe.capture(), artifacts)
    assert [(c.item, c.action, c.current) for c, _ in result.failed] == []
    assert sorted((c.item, c.action, c.current) for c in result.done) == [
        (f"{conf}:all", "deinstall", None),
        (f"{up}:all", "reinstall", "1.0 (half-installed)"),
    ]
    assert states(prefix) == before
    assert audit() == ""
    assert probe.diff(recorded, probe.capture()) == []


@pytest.mark.parametrize("kept", [True, False])
def test_a_package_whose_dpkg_files_were_damaged_is_reinstalled(
    home,
    tmp_path,
    rwtest_packages,  # noqa: F811
    kept,
):
    """Nothing in its state changed, but dpkg --audit finds it damaged: with
    its .deb kept it is reinstalled; without, the rollback says it is not done."""
    prefix = rwtest_packages
    name = f"{prefix}-dmg"
    deb = make_deb(tmp_path, name, "1.0")
    sh("dpkg", "-i", str(deb))
    before = states(prefix)
    if kept:
        (home / "data" / "debs").mkdir(parents=True, mode=0o700)
        os.link(deb, home / "data" / "debs" / deb.name)
    os.unlink(deb)
    damage = f"rm /var/lib/dpkg/info/{name}.md5sums && echo 'ERROR: damaged'"
    proc = guard("sh", "-c", damage)
    if kept:
        rolled_back(proc, prefix, before, f"dpkg: {name}:all 1.0 (damaged) -> 1.0 (repair)")
        assert Path(f"/var/lib/dpkg/info/{name}.md5sums").exists()
        return
    assert proc.returncode == 3, proc.stderr
    assert "Rollback failed - manual intervention required" in proc.stderr
    remains = proc.stderr.split("Remains (not as the checkpoint recorded it):")[1]
    assert (
        f"dpkg: {name}:all 1.0 (damaged) -> 1.0 (repair): dpkg --audit: missing the md5sums "
        "control file in the database, they need to be reinstalled"
    ) in remains
    assert name in audit()
