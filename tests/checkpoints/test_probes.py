"""System-state probes against the real dpkg, pip and sysv init scripts (no mocks).

Package and service tests change the machine, so they need root; every name
they create carries a random tag and is removed again in a finalizer. Restores
are given states narrowed to the test's own items, so whatever else changes on
the machine meanwhile is never touched.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from rewind_daemon.checkpoints.probes import ProbeChange, ProbeConfig, available_probes
from rewind_daemon.checkpoints.probes.dpkg import APT_ARCHIVES, DpkgProbe, deb_file_name
from rewind_daemon.checkpoints.probes.pip import PipProbe
from rewind_daemon.checkpoints.probes.services import ServiceProbe, systemd_running

needs_root_dpkg = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("dpkg") is None, reason="needs root and dpkg"
)
needs_root_sysv = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("service") is None or systemd_running(),
    reason="needs root and sysv init scripts",
)


def sh(*argv: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr}"
    return proc


def build_deb(
    out: Path, name: str, version: str, tag: str, depends: str = "", conffile: bool = False
) -> Path:
    """A tiny arch-all package owning /usr/share/rwtest-TAG/NAME (and a conffile)."""
    root = out / f"{name}-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    share = root / "usr" / "share" / f"rwtest-{tag}"
    share.mkdir(parents=True)
    (share / name).write_text(f"{name} {version}\n")
    control = (
        f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
        f"Maintainer: rw tests <rw@example.invalid>\nDescription: rw probe test\n"
    )
    if depends:
        control += f"Depends: {depends}\n"
    (root / "DEBIAN" / "control").write_text(control)
    if conffile:
        (root / "etc").mkdir()
        (root / "etc" / f"{name}.conf").write_text("setting = 1\n")
        (root / "DEBIAN" / "conffiles").write_text(f"/etc/{name}.conf\n")
        postinst = root / "DEBIAN" / "postinst"
        postinst.write_text("#!/bin/sh\nset -e\nexit 0\n")
        postinst.chmod(0o755)
    deb = out / deb_file_name(name, version, "all")
    sh("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(deb))
    return deb


def ours(state: dict, prefix: str) -> dict:
    return {"packages": {k: v for k, v in state["packages"].items() if k.startswith(prefix)}}


def write_wheel(out: Path, dist: str, version: str, files: dict[str, str] | None = None) -> Path:
    """A minimal pure-Python wheel written by hand: no build backend, no network.
    Its files are `files` (path -> text; default: one module) and its metadata."""
    module = dist.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files = {
        **(files or {f"{module}.py": f"VERSION = {version!r}\n"}),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: rw-tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    wheel = out / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie (PID 1 here need not reap) counts as gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


INIT_SCRIPT = """\
#!/bin/sh
### BEGIN INIT INFO
# Provides:          {name}
# Required-Start:
# Required-Stop:
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: rw probe test daemon
### END INIT INFO
PIDFILE=/run/{name}.pid
running() {{ [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }}
case "$1" in
  start)
    running && exit 0
    sleep 600 </dev/null >/dev/null 2>&1 &
    echo $! >"$PIDFILE"
    ;;
  stop)
    running && kill "$(cat "$PIDFILE")"
    rm -f "$PIDFILE"
    ;;
  status)
    if running; then echo "{name} is running"; exit 0; fi
    echo "{name} is not running"; exit 3
    ;;
  *)
    echo "Usage: $0 {{start|stop|status}}" >&2; exit 3
    ;;
esac
exit 0
"""


# -- shared -------------------------------------------------------------------


def test_describe_and_available_probes():
    change = ProbeChange("dpkg", "hello:amd64", "reinstall", "1.2-1", "1.3-1")
    assert change.describe() == "dpkg: hello:amd64 1.3-1 -> 1.2-1 (reinstall)"
    change = ProbeChange("services", "rwtest", "stop", "stopped", "running")
    assert change.describe() == "services: rwtest: running -> stopped (stop)"
    gone = ProbeChange("dpkg", "a:all", "remove", None, "1.0")
    assert gone.describe() == "dpkg: a:all 1.0 -> absent (remove)"
    config = ProbeConfig()
    assert [p.name for p in available_probes(config, packages=True, services=True)] == [
        "dpkg",
        "pip",
        "services",
    ]
    assert [p.name for p in available_probes(config, packages=False, services=True)] == ["services"]
    assert available_probes(config, packages=False, services=False) == []


# -- dpkg ---------------------------------------------------------------------


@pytest.fixture
def rwtest_packages(tmp_path):
    """A random package-name prefix; every package with it is purged afterwards."""
    prefix = f"rwtest-{uuid.uuid4().hex[:8]}"
    yield prefix
    listed = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\n", f"{prefix}-*"], capture_output=True, text=True
    )
    names = listed.stdout.split()
    if names:
        # Manual first: apt forgets a package's auto mark only while it is installed.
        subprocess.run(["apt-mark", "manual", *names], capture_output=True, timeout=120)
        # Also those a test left half-installed (dpkg wants them reinstalled first).
        purge = ["dpkg", "--purge", "--force-remove-reinstreq", "--force-depends"]
        subprocess.run([*purge, *names], capture_output=True, timeout=120)


@needs_root_dpkg
def test_dpkg_restore_from_kept_debs(tmp_path, rwtest_packages):
    prefix = rwtest_packages
    tag = prefix.split("-", 1)[1]
    a, b, c = f"{prefix}-a", f"{prefix}-b", f"{prefix}-c"
    debs = tmp_path / "debs"
    debs.mkdir()
    b1 = build_deb(debs, b, "1.0", tag)
    # B 2.0 needs A, so A can only be purged once B is back at 1.0.
    b2 = build_deb(debs, b, "2.0", tag, depends=a)
    a1 = build_deb(debs, a, "1.0", tag)
    c1 = build_deb(debs, c, "1.0", tag, conffile=True)

    sh("dpkg", "--install", str(b1), str(c1))
    sh("apt-mark", "auto", b)
    probe = DpkgProbe(keep_debs=lambda name: name.startswith(prefix))
    assert probe.unavailable() is None
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    recorded = probe.capture(artifacts)
    assert recorded["packages"][f"{b}:all"] == {"version": "1.0", "manual": False}
    assert recorded["packages"][f"{c}:all"] == {"version": "1.0", "manual": True}
    b_kept, c_kept = deb_file_name(b, "1.0", "all"), deb_file_name(c, "1.0", "all")
    assert {b_kept, c_kept} <= set(recorded["artifacts"])
    assert not (APT_ARCHIVES / c_kept).exists()  # so these were rebuilt, not copied
    # A second capture finds them there and keeps the very same files.
    inode = (artifacts / c_kept).stat().st_ino
    assert probe.capture(artifacts)["artifacts"] == recorded["artifacts"]
    assert (artifacts / c_kept).stat().st_ino == inode

    sh("dpkg", "--install", str(a1), str(b2))
    sh("dpkg", "--purge", c)
    shutil.rmtree(debs)  # only the kept copies can bring B 1.0 and C back
    current = probe.capture()
    changes = probe.diff(ours(recorded, prefix), ours(current, prefix))
    assert [(ch.item, ch.action, ch.recorded, ch.current) for ch in changes] == [
        (f"{a}:all", "remove", None, "1.0"),
        (f"{b}:all", "reinstall", "1.0", "2.0"),
        (f"{c}:all", "install", "1.0", None),
    ]

    result = probe.restore(ours(recorded, prefix), ours(current, prefix), artifacts)
    assert result.failed == []
    assert sorted(result.done, key=lambda ch: ch.item) == changes

    after = probe.capture()
    assert ours(after, prefix) == ours(recorded, prefix)
    assert probe.diff(ours(recorded, prefix), ours(after, prefix)) == []
    # The rebuilt C kept its conffile and maintainer script.
    assert Path(f"/etc/{c}.conf").read_text() == "setting = 1\n"
    assert f"/etc/{c}.conf" in sh("dpkg-query", "-W", "-f=${Conffiles}", c).stdout
    assert Path(f"/var/lib/dpkg/info/{c}.postinst").exists()


@needs_root_dpkg
def test_dpkg_restore_without_any_deb_fails_per_item(tmp_path, rwtest_packages):
    missing = f"{rwtest_packages}-z:all"
    recorded = {"packages": {missing: {"version": "9.9", "manual": True}}}
    result = DpkgProbe().restore(recorded, {"packages": {}}, tmp_path)
    assert result.done == []
    [(change, reason)] = result.failed
    assert (change.item, change.action) == (missing, "install")
    assert f"no .deb of {rwtest_packages}-z 9.9 available" in reason
    assert "\n" not in reason


@needs_root_dpkg
def test_dpkg_repack_of_a_system_package(tmp_path):
    packages = DpkgProbe().capture()["packages"]
    uncached = []
    for key, entry in packages.items():
        name, arch = key.split(":")
        file_name = deb_file_name(name, entry["version"], arch)
        if name in ("dpkg", "procps", "bash") and not (APT_ARCHIVES / file_name).exists():
            uncached.append((name, entry["version"], arch))
    if not uncached:
        pytest.skip("every candidate package is in apt's cache; nothing to rebuild")
    name, version, arch = uncached[0]
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    kept = DpkgProbe(keep_debs=lambda n: n == name).capture(artifacts)["artifacts"]
    deb = artifacts / deb_file_name(name, version, arch)
    assert kept == [deb.name]
    fields = sh("dpkg-deb", "--field", str(deb), "Package", "Version", "Architecture").stdout
    assert fields.splitlines() == [
        f"Package: {name}",
        f"Version: {version}",
        f"Architecture: {arch}",
    ]
    contents = sh("dpkg-deb", "--contents", str(deb)).stdout.splitlines()
    in_deb = {line.split()[5][1:].rstrip("/") for line in contents} - {""}
    listed = set(sh("dpkg-query", "--listfiles", name).stdout.splitlines()) - {"/."}
    assert in_deb == {p for p in listed if os.path.lexists(p)}
    assert not [p for p in artifacts.iterdir() if p.name.startswith(".")]


# -- pip ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    path = tmp_path_factory.mktemp("venv") / "env"
    sh(sys.executable, "-m", "venv", str(path))
    return path


def test_pip_restore(tmp_path, venv):
    tag = uuid.uuid4().hex[:8]
    x, y, z = (f"rwtest-{tag}-{s}" for s in "xyz")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for dist, version in ((x, "1.0"), (x, "2.0"), (y, "1.0"), (z, "1.0")):
        write_wheel(wheels, dist, version)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "--disable-pip-version-check", "-q"]
    offline = ["--no-index", "--find-links", str(wheels)]
    sh(*pip, "install", *offline, f"{x}==1.0", f"{z}==1.0")

    probe = PipProbe([str(venv)], find_links=[str(wheels)])  # a venv directory will do
    assert probe.interpreters == [python]
    assert probe.unavailable() is None
    recorded = probe.capture()
    assert recorded["environments"][python][x] == {"version": "1.0"}

    sh(*pip, "install", *offline, f"{y}==1.0", f"{x}==2.0")
    sh(*pip, "uninstall", "-y", z)
    current = probe.capture()
    changes = probe.diff(recorded, current)
    assert [(ch.item, ch.action, ch.recorded, ch.current) for ch in changes] == [
        (f"{x} ({python})", "reinstall", "1.0", "2.0"),
        (f"{y} ({python})", "remove", None, "1.0"),
        (f"{z} ({python})", "install", "1.0", None),
    ]

    result = probe.restore(recorded, current)
    assert result.failed == []
    assert sorted(result.done, key=lambda ch: ch.item) == changes
    after = probe.capture()
    assert after == recorded
    assert probe.diff(recorded, after) == []

    # A version no find-links directory holds fails alone, with pip's reason.
    wanted = {"environments": {python: {**recorded["environments"][python]}}}
    wanted["environments"][python][x] = {"version": "9.9"}
    result = probe.restore(wanted, after)
    assert result.done == []
    [(change, reason)] = result.failed
    assert change.item == f"{x} ({python})" and change.action == "reinstall"
    assert "9.9" in reason and "\n" not in reason
    sh(*pip, "uninstall", "-y", x)  # leave the module-scoped venv clean


def test_pip_unavailable(tmp_path):
    nowhere = tmp_path / "nowhere" / "python"
    assert "no such interpreter" in (PipProbe([str(nowhere)]).unavailable() or "")
    bare = tmp_path / "bare"
    sh(sys.executable, "-m", "venv", "--without-pip", str(bare))
    reason = PipProbe([str(bare)]).unavailable() or ""
    assert reason == f"{bare}/bin/python: pip is not installed for it"


def test_pip_default_is_the_active_venv(monkeypatch, venv):
    monkeypatch.setenv("VIRTUAL_ENV", str(venv))
    assert PipProbe().interpreters == [str(venv / "bin" / "python")]


# -- services -----------------------------------------------------------------


@pytest.fixture
def init_script():
    """A real sysv init script running a `sleep` daemon; removed with its links after."""
    name = f"rwtest-{uuid.uuid4().hex[:8]}"
    script = Path("/etc/init.d") / name
    pidfile = Path("/run") / f"{name}.pid"
    script.write_text(INIT_SCRIPT.format(name=name))
    script.chmod(0o755)
    yield name, pidfile
    subprocess.run(["service", name, "stop"], capture_output=True, timeout=30)
    subprocess.run(["update-rc.d", "-f", name, "remove"], capture_output=True, timeout=30)
    script.unlink(missing_ok=True)
    pidfile.unlink(missing_ok=True)


@needs_root_sysv
def test_services_restore_sysv(init_script):
    name, pidfile = init_script
    probe = ServiceProbe([name])
    assert probe.unavailable() is None
    recorded = probe.capture()
    assert recorded["services"] == {name: {"state": "stopped", "enabled": False}}

    sh("service", name, "start")
    sh("update-rc.d", name, "defaults")
    pid = int(pidfile.read_text())
    assert pid_alive(pid)
    current = probe.capture()
    assert current["services"] == {name: {"state": "running", "enabled": True}}
    changes = probe.diff(recorded, current)
    assert [ch.describe() for ch in changes] == [
        f"services: {name}: enabled -> disabled (disable)",
        f"services: {name}: running -> stopped (stop)",
    ]
    result = probe.restore(recorded, current)
    assert (result.done, result.failed) == (changes, [])
    assert not pid_alive(pid)
    assert probe.capture() == recorded

    # And back the other way: start it and enable it again.
    result = probe.restore(current, recorded)
    assert [ch.action for ch in result.done] == ["enable", "start"]
    assert result.failed == []
    assert pid_alive(int(pidfile.read_text()))
    assert probe.capture() == current


@needs_root_sysv
def test_services_unknown_and_missing(init_script):
    name, _ = init_script
    quiet = Path("/etc/init.d") / f"{name}-nostat"
    quiet.write_text("#!/bin/sh\necho started >/dev/null\n")
    quiet.chmod(0o755)
    try:
        probe = ServiceProbe([quiet.name, f"{name}-absent"])
        assert probe.capture()["services"] == {quiet.name: {"state": "unknown", "enabled": False}}
    finally:
        quiet.unlink()
    # A recorded "unknown" is never acted on.
    recorded = {"services": {name: {"state": "unknown", "enabled": None}}}
    now = {"services": {name: {"state": "running", "enabled": True}}}
    assert ServiceProbe([name]).diff(recorded, now) == []
    # A service that was running and whose script is gone now fails alone.
    recorded = {"services": {f"{name}-gone": {"state": "running", "enabled": False}}}
    result = ServiceProbe().restore(recorded, {"services": {}})
    [(change, reason)] = result.failed
    assert change.action == "start" and "does not exist" in reason


def test_services_capture_is_quick_and_plain():
    if systemd_running() or shutil.which("service") is None:
        pytest.skip("sysv only")
    start = time.monotonic()
    state = ServiceProbe().capture()
    assert time.monotonic() - start < 30
    for entry in state["services"].values():
        assert entry["state"] in ("running", "stopped", "unknown")
        assert entry["enabled"] in (True, False)
