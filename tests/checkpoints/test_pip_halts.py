"""A pip install that stops half-way, rolled back by rw guard in a real venv.

pip writes a wheel's files one by one, its .dist-info last and RECORD last of
all; an install that fails (here: a directory where a file must go) leaves
what it wrote so far, which `pip list` does not show (no .dist-info) or shows
as installed but cannot uninstall (no RECORD).

The tests share one venv, made once for the module; each installs a
distribution of its own name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from ..conftest import RW, write_config
from .test_probes import (
    sh,
    venv,  # noqa: F401 - a fixture
    write_wheel,
)


def wheel_with_files(out: Path, dist: str, version: str, modules: int) -> Path:
    """A pure-Python wheel of a package with many modules and one late top-level module."""
    module = dist.replace("-", "_")
    files = {f"{module}/__init__.py": f"VERSION = {version!r}\n"}
    files.update({f"{module}/m{i}.py": f"N = {i}  # {version}\n" for i in range(modules)})
    files[f"zz_{module}_late.py"] = "LATE = 1\n"
    return write_wheel(out, dist, version, files)


def listed(python: str) -> dict[str, str]:
    out = subprocess.run(
        [python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
    ).stdout
    return {p["name"]: p["version"] for p in json.loads(out)}


@pytest.mark.parametrize("stopped_at", ["a module", "RECORD"])
def test_a_pip_install_stopped_half_way_is_swept(rw_home, tmp_path, venv, stopped_at):  # noqa: F811
    python = str(venv / "bin" / "python")
    site = sh(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    site_dir = site.stdout.strip()
    dist = f"rwtest-{uuid.uuid4().hex[:8]}-half"
    module = dist.replace("-", "_")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel_with_files(wheels, dist, "1.0", modules=20)
    write_config(
        rw_home,
        f"[daemon]\nautostart = false\n[checkpoint]\npip = ['{python}']\n"
        f"pip_find_links = ['{wheels}']\n",
    )
    # A directory where pip must write a file stops it there.
    blocker = (
        f"zz_{module}_late.py" if stopped_at == "a module" else f"{module}-1.0.dist-info/RECORD"
    )
    before_files = sorted(os.listdir(site_dir))
    before_dists = listed(python)
    install = (
        f"mkdir -p {site_dir}/{blocker} && PIP_ROOT_USER_ACTION=ignore {python} -m pip "
        f"--disable-pip-version-check -q install --no-index --find-links {wheels} {dist}"
    )
    # Only sh on PATH: dpkg cannot be checkpointed, so this run is about pip alone.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sh").symlink_to(shutil.which("sh") or "/bin/sh")
    (bin_dir / "mkdir").symlink_to(shutil.which("mkdir") or "/bin/mkdir")
    proc = subprocess.run(
        # (pip warns about the .dist-info that holds nothing but the blocker yet)
        [RW, "guard", "--packages", "--no-services", "--allow", "invalid metadata", "--"]
        + ["sh", "-c", install],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": str(bin_dir)},
    )
    assert "Could not install packages" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 1, proc.stderr
    assert "Checkpoint Status: Rollback completed successfully" in proc.stderr, proc.stderr
    assert "nothing had changed" not in proc.stderr
    partial = f"{site_dir}/{module} ({python}) owned by no distribution -> absent (remove)"
    assert f"pip: {partial}" in proc.stderr, proc.stderr
    if stopped_at == "RECORD":
        # pip lists it (it has METADATA) and cannot uninstall it (no RECORD).
        assert f"pip: {dist} ({python}) 1.0 -> absent (remove)" in proc.stderr
    assert sorted(os.listdir(site_dir)) == before_files
    assert listed(python) == before_dists


def test_a_pip_upgrade_stopped_half_way_goes_back_to_the_old_version(rw_home, tmp_path, venv):  # noqa: F811
    python = str(venv / "bin" / "python")
    site_dir = sh(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    site = Path(site_dir.stdout.strip())
    dist = f"rwtest-{uuid.uuid4().hex[:8]}-up"
    module = dist.replace("-", "_")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel_with_files(wheels, dist, "1.0", modules=20)
    wheel_with_files(wheels, dist, "2.0", modules=30)
    pip = [python, "-m", "pip", "--disable-pip-version-check", "-q"]
    sh(*pip, "install", "--no-index", "--find-links", str(wheels), f"{dist}==1.0")
    write_config(
        rw_home,
        f"[daemon]\nautostart = false\n[checkpoint]\npip = ['{python}']\n"
        f"pip_find_links = ['{wheels}']\n",
    )
    before_files = sorted(os.listdir(site))
    before_modules = sorted(os.listdir(site / module))
    upgrade = (
        f"mkdir -p {site}/{module}-2.0.dist-info/RECORD && PIP_ROOT_USER_ACTION=ignore {python}"
        f" -m pip --disable-pip-version-check -q install --no-index --find-links {wheels}"
        f" {dist}==2.0"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "mkdir"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/bin/{tool}")
    proc = subprocess.run(
        [RW, "guard", "--packages", "--no-services", "--allow", "invalid metadata", "--"]
        + ["sh", "-c", upgrade],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": str(bin_dir)},
    )
    assert "Could not install packages" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 1, proc.stderr
    assert "Checkpoint Status: Rollback completed successfully" in proc.stderr, proc.stderr
    assert "nothing had changed" not in proc.stderr
    assert sorted(os.listdir(site)) == before_files
    assert sorted(os.listdir(site / module)) == before_modules
    assert f"pip: {site}/{module}-2.0.dist-info ({python}) owned by no distribution" in proc.stderr
    assert (site / module / "m3.py").read_text() == "N = 3  # 1.0\n"
    assert listed(python)[dist] == "1.0"
    sh(*pip, "uninstall", "-y", dist)  # leave the module-scoped venv clean
