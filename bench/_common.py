"""Shared by the benchmark scripts: options, a private RW_HOME, the daemon, verdicts.

Each script runs as `python bench/NAME.py` (this directory is then on sys.path).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rewind_daemon import paths
from rewind_daemon.paths import Paths


def rw_program() -> str:
    """The rw next to this interpreter (a venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "rw"
    if beside.exists():
        return str(beside)
    found = shutil.which("rw")
    if not found:
        raise SystemExit("bench: cannot find the rw program; install rw in this environment")
    return found


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="A fast smoke run (figures are rough).")
    p.add_argument("--check", action="store_true", help="Exit 1 when a target is missed.")
    return p


def rw_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RW_")}
    env["RW_HOME"] = str(home)
    return env


@contextmanager
def rw_home() -> Iterator[Path]:
    """A fresh RW_HOME; whatever daemon runs in it is stopped on the way out.

    Autostart is off, so only the benchmark itself ever starts a daemon there.
    """
    home = Path(tempfile.mkdtemp(prefix="rw-bench-"))
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text("[daemon]\nautostart = false\n")
    try:
        yield home
    finally:
        stop_daemon(home)
        shutil.rmtree(home, ignore_errors=True)


def rw_paths(home: Path) -> Paths:
    """Where rw keeps things under `home`, as the rw program resolves them."""
    saved = os.environ.get("RW_HOME")
    os.environ["RW_HOME"] = str(home)
    try:
        return paths.resolve()
    finally:
        if saved is None:
            del os.environ["RW_HOME"]
        else:
            os.environ["RW_HOME"] = saved


def start_daemon(home: Path) -> None:
    subprocess.run(
        [rw_program(), "daemon", "start"], env=rw_env(home), check=True, capture_output=True
    )


def stop_daemon(home: Path) -> None:
    subprocess.run(
        [rw_program(), "daemon", "stop"], env=rw_env(home), capture_output=True, timeout=60
    )


class ForegroundDaemon:
    """A `rw daemon run` started by foreground_daemon: when it was spawned and
    when it said it was listening (perf_counter), and its log lines."""

    def __init__(self) -> None:
        self.spawned = self.listening = 0.0
        self.log: list[str] = []


@contextmanager
def foreground_daemon(
    home: Path, after_stop: Callable[[], None] | None = None
) -> Iterator[ForegroundDaemon]:
    """Run the daemon in the foreground, its log followed; yields once it
    listens. On leaving: `rw daemon stop` (then `after_stop()`, before the
    daemon is waited for), and its warnings and errors counted on stdout."""
    d = ForegroundDaemon()
    listening = threading.Event()

    def follow(stream) -> None:
        for line in stream:
            if not listening.is_set() and "listening on" in line:
                d.listening = time.perf_counter()
                listening.set()
            d.log.append(line)

    d.spawned = time.perf_counter()
    proc = subprocess.Popen(
        [rw_program(), "daemon", "run"],
        env=rw_env(home), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    reader = threading.Thread(target=follow, args=(proc.stderr,), daemon=True)
    reader.start()
    try:
        if not listening.wait(60):
            raise SystemExit(f"bench: the daemon did not start: {''.join(d.log)[-2000:]}")
        yield d
    finally:
        subprocess.run([rw_program(), "daemon", "stop"], env=rw_env(home), capture_output=True)
        if after_stop is not None:
            after_stop()
        proc.wait(60)
        reader.join(10)
    warnings = [line for line in d.log if " WARNING " in line or " ERROR " in line]
    if warnings:
        print(f"  daemon logged {len(warnings)} warnings/errors, first: {warnings[0].strip()}")


def machine() -> str:
    """The machine, for a run's first line; rw's modules are byte-compiled
    first where their .pyc files are missing or stale (`as_installed`)."""
    return (
        f"{platform.node()}: {os.cpu_count()} cores, {platform.platform()}, "
        f"Python {platform.python_version()}{as_installed()}"
    )


def as_installed() -> str:
    """Byte-compile rw's modules where their .pyc files are missing or stale,
    as installing rw does: a source tree run where PYTHONDONTWRITEBYTECODE is
    set (an editable install, a CI machine) compiles them again at every
    start, and each rw, daemon and worker a benchmark starts would pay for it.
    What to add to the machine's line."""
    import compileall

    import rewind_daemon

    package = Path(rewind_daemon.__file__).parent
    if not os.access(package, os.W_OK):
        return ""  # (installed read-only: compiled where it was installed)
    compileall.compile_dir(str(package), quiet=1, workers=1)
    return ", rw's modules byte-compiled"


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        v = values[0]
        return v, v, v
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


class Verdicts:
    """Target checks, printed as PASS/FAIL lines and summed up at the end."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def at_most(self, label: str, value: float, limit: float, unit: str) -> None:
        self._say(label, value <= limit, f"{value:.3f} {unit} (target <= {limit:g} {unit})")

    def at_least(self, label: str, value: float, limit: float, unit: str) -> None:
        shown = "inf" if value == float("inf") else f"{value:.1f}"
        self._say(label, value >= limit, f"{shown}{unit} (target >= {limit:g}{unit})")

    def _say(self, label: str, ok: bool, detail: str) -> None:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}: {detail}")
        if not ok:
            self.failed.append(label)

    def finish(self, check: bool) -> int:
        if self.failed:
            print(f"result: FAIL ({len(self.failed)} target(s) missed)")
        else:
            print("result: PASS (all targets met)")
        return 1 if check and self.failed else 0


# A plausible interactive environment (about 40 exported variables), so the
# per-command environment capture costs what it would for a real user.
LS_COLORS = (
    "rs=0:di=01;34:ln=01;36:mh=00:pi=40;33:so=01;35:do=01;35:bd=40;33;01:cd=40;33;01:"
    "or=40;31;01:mi=00:su=37;41:sg=30;43:ca=30;41:tw=30;42:ow=34;42:st=37;44:ex=01;32:"
    + "".join(
        f"*.{ext}=01;{color}:"
        for ext, color in zip(
            "tar tgz arc arj taz lha lz4 lzh lzma tlz txz tzo t7z zip z dz gz lrz lz lzo xz "
            "zst tzst bz2 bz tbz tbz2 tz deb rpm jar war ear sar rar alz ace zoo cpio 7z rz "
            "cab wim swm dwm esd jpg jpeg mjpg mjpeg gif bmp pbm pgm ppm tga xbm xpm tif tiff "
            "png svg svgz mng pcx mov mpg mpeg m2v mkv webm webp ogm mp4 m4v mp4v vob qt nuv "
            "wmv asf rm rmvb flc avi fli flv gl dl xcf xwd yuv cgm emf ogv ogx aac au flac "
            "m4a mid midi mka mp3 mpc ogg ra wav oga opus spx xspf".split(),
            [31] * 50 + [35] * 60 + [36] * 30,
        )
    )
)


def realistic_env(home: Path) -> dict[str, str]:
    env = {
        "HOME": str(home),
        "USER": os.environ.get("USER", "dev"),
        "LOGNAME": os.environ.get("USER", "dev"),
        "SHELL": "/bin/bash",
        "PATH": f"{Path(sys.executable).parent}:{home}/.local/bin:/usr/local/sbin:"
        "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "TERM": "dumb",
        "LANG": "C.UTF-8",
        "LC_CTYPE": "C.UTF-8",
        "LS_COLORS": LS_COLORS,
        "EDITOR": "vim",
        "VISUAL": "vim",
        "PAGER": "less",
        "LESS": "-FRX",
        "MANPAGER": "less -s",
        "HISTSIZE": "10000",
        "HISTFILESIZE": "20000",
        "XDG_CONFIG_HOME": f"{home}/.config",
        "XDG_DATA_HOME": f"{home}/.local/share",
        "XDG_CACHE_HOME": f"{home}/.cache",
        "XDG_SESSION_TYPE": "tty",
        "XDG_SESSION_CLASS": "user",
        "SSH_AUTH_SOCK": "/tmp/ssh-XXXXk3Jd9/agent.4242",
        "SSH_CLIENT": "10.0.2.2 53422 22",
        "SSH_CONNECTION": "10.0.2.2 53422 10.0.2.15 22",
        "SSH_TTY": "/dev/pts/0",
        "GOPATH": f"{home}/go",
        "CARGO_HOME": f"{home}/.cargo",
        "RUSTUP_HOME": f"{home}/.rustup",
        "NVM_DIR": f"{home}/.nvm",
        "PYENV_ROOT": f"{home}/.pyenv",
        "VIRTUAL_ENV_DISABLE_PROMPT": "1",
        "DOCKER_BUILDKIT": "1",
        "KUBECONFIG": f"{home}/.kube/config",
        "AWS_PROFILE": "staging",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "GIT_EDITOR": "vim",
        "GPG_TTY": "/dev/pts/0",
        "MAIL": "/var/mail/dev",
        "TZ": "UTC",
        "COLORTERM": "truecolor",
    }
    return env


def median_wall(argv: list[str], env: dict[str, str], runs: int, ok: tuple[int, ...] = (0,),
                warm_up: bool = True) -> float:  # fmt: skip
    """Median wall seconds of `runs` runs of `argv` (after one warm-up run)."""
    times = []
    for i in range(runs + (1 if warm_up else 0)):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL)
        elapsed = time.perf_counter() - t0
        if proc.returncode not in ok:
            raise SystemExit(
                f"bench: {' '.join(argv[:3])} exited {proc.returncode}: {proc.stderr[-500:]!r}"
            )
        if i or not warm_up:
            times.append(elapsed)
    return statistics.median(times)
