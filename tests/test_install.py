"""install.sh, run for real: a private HOME, a real virtual environment and pip,
real rc files, the real daemon, and interactive shells that load those rc files.

Slow-ish (each install builds a virtual environment): the installs are shared
where the tests only look, and pip installs offline from a wheelhouse made once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rewind_daemon import __version__

from .conftest import kill_daemon
from .shell import Shell

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "install.sh"
MARKER = "# added by rw install.sh"
BASHRC = "# my bashrc\nalias ll='ls -l'"  # no final newline, on purpose
ZSHRC = "# my zshrc\nsetopt autocd\n"


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """rw's dependencies and build backend as wheels, fetched once (from pip's
    cache when it has them), so the installs below need no package index."""
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
         "-w", str(wheels), str(REPO), "setuptools", "wheel"],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return wheels


@dataclass
class Install:
    env: dict[str, str]
    home: Path
    rw_home: Path
    runs: list[subprocess.CompletedProcess] = field(default_factory=list)

    @property
    def venv(self) -> Path:
        return self.home / ".local/share/rw/venv"

    @property
    def link(self) -> Path:
        return self.home / ".local/bin/rw"

    def run(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(INSTALL), *args],
            env=self.env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(
                f"install.sh {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        self.runs.append(proc)
        return proc

    def rw(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.link), *args], env=self.env, capture_output=True, text=True, timeout=30
        )

    def stop_daemon(self) -> None:
        if self.link.exists():
            self.rw("daemon", "stop")
        kill_daemon(self.rw_home)


def make_install(tmp: Path, wheelhouse: Path) -> Install:
    """A private HOME with a .bashrc and a .zshrc; nothing installed yet."""
    home = tmp / "home"
    home.mkdir()
    (home / ".bashrc").write_text(BASHRC)
    (home / ".zshrc").write_text(ZSHRC)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RW_", "XDG_", "ZDOTDIR"))}
    env.update(
        HOME=str(home),
        RW_HOME=str(tmp / "rwhome"),
        PYTHON=getattr(sys, "_base_executable", sys.executable),
        RW_PIP_ARGS=f"--no-index --find-links {wheelhouse}",
    )
    return Install(env, home, tmp / "rwhome")


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheelhouse):
    """One install, run twice (it must be idempotent), shared by the tests that only look."""
    inst = make_install(tmp_path_factory.mktemp("installed"), wheelhouse)
    try:
        inst.run()
        inst.run()
        yield inst
    finally:
        inst.stop_daemon()


@pytest.fixture
def fresh(tmp_path, wheelhouse):
    inst = make_install(tmp_path, wheelhouse)
    yield inst
    inst.stop_daemon()


def hook_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if MARKER in line]


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".rw-backup-*"))


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for init to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_rw_runs_from_the_link(installed):
    assert installed.link.is_symlink()
    assert installed.link.resolve() == (installed.venv / "bin/rw").resolve()
    assert (installed.venv / "pyvenv.cfg").is_file()
    version = installed.rw("--version")
    assert version.returncode == 0 and __version__ in version.stdout
    status = installed.rw("daemon", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["running"] is True


def test_the_c_module_is_built_where_a_compiler_is(installed, c_module):
    # (Where none is, pip goes on without it: rw doctor says so.)
    doctor = installed.rw("doctor")
    assert "ok   output text: made in C" in doctor.stdout, doctor.stdout
    assert "ok   recorder loop: in C" in doctor.stdout, doctor.stdout


def test_without_a_compiler_rw_installs_and_makes_the_same_text_in_python(fresh, tmp_path):
    # (From a copy of the tree: a build directory left in it would be reused.)
    src = tmp_path / "src"
    left = (".git", "build", ".venv*", "node_modules", "*.so", "__pycache__", "*.egg-info")
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*left))
    fresh.env["CC"] = "/bin/false"  # (the compiler setuptools calls, failing)
    proc = subprocess.run(
        [str(src / "install.sh"), "--no-rc"],
        env=fresh.env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doctor = fresh.rw("doctor")
    assert "ok   output text: warning: made in Python" in doctor.stdout, doctor.stdout
    assert "ok   recorder loop: warning: in Python" in doctor.stdout, doctor.stdout
    code = (
        "from rewind_daemon.capture import termtext as t; print(t._c, t.text_parts(b'a\\rb', 'x'))"
    )
    made = subprocess.run(
        [str(fresh.venv / "bin/python"), "-c", code],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    assert made.stdout == "None ('b', 'a\\n')\n", made.stdout + made.stderr


def test_rc_lines_added_once_with_one_backup(installed):
    assert "already loads rw" in installed.runs[1].stdout
    for name, original, shell in ((".bashrc", BASHRC, "bash"), (".zshrc", ZSHRC, "zsh")):
        rc = installed.home / name
        lines = hook_lines(rc)
        assert len(lines) == 1, rc.read_text()
        assert f'"$HOME/.local/bin/rw" init {shell}' in lines[0]
        assert rc.read_text().startswith(original.rstrip("\n") + "\n")
        saved = backups(rc)
        assert len(saved) == 1
        assert saved[0].read_text() == original


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_rc_file_records_an_interactive_shell(installed, kind):
    # PATH without the bin dir: the rc line names rw by absolute path.
    sh = Shell(
        kind, rw_home=installed.rw_home, home=installed.home, bin_dir=installed.link.parent,
        init=False, shell_args=["-i"], env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
    )  # fmt: skip
    try:
        assert sh.run("echo rw-install-check") == "rw-install-check"
        assert "function" in sh.run("type rw").splitlines()[0]  # the hook defined it
        steps = json.loads(installed.rw("log", sh.session_id(), "--json").stdout)
    finally:
        sh.close()
    done = [s for s in steps if s["command"] == "echo rw-install-check"]
    assert len(done) == 1 and done[0]["exit_code"] == 0


def test_uninstall_removes_everything_but_the_data(fresh):
    fresh.run()
    pid = int((fresh.rw_home / "run/daemon.pid").read_text())
    assert (fresh.rw_home / "data/rw.db").exists()

    fresh.run("--uninstall")
    assert not fresh.link.exists() and not fresh.link.is_symlink()
    assert not fresh.venv.exists()
    assert not running(pid)
    for name, original in ((".bashrc", BASHRC), (".zshrc", ZSHRC)):
        rc = fresh.home / name
        assert hook_lines(rc) == []
        assert rc.read_text().rstrip("\n") == original.rstrip("\n")
        assert len(backups(rc)) == 2  # one from the install, one from the uninstall
    assert (fresh.rw_home / "data/rw.db").exists()

    again = fresh.run("--uninstall")  # nothing left to do, and that is fine
    assert "kept in" in again.stdout and (fresh.rw_home / "data/rw.db").exists()


# Modules of the flat layout before the parts had folders (issue 13): three
# whose names are now folders, and others that moved into one.
FLAT_LAYOUT = ["checkpoints.py", "guard.py", "daemon.py", "history.py", "guard_rules.py",
               "hooks_render.py", "probes/__init__.py", "probes/dpkg.py"]  # fmt: skip


def test_an_upgrade_in_place_leaves_nothing_of_the_old_layout(fresh):
    fresh.run("--no-rc")
    python = str(fresh.venv / "bin/python")
    site = next(fresh.venv.glob("lib/python*/site-packages"))
    package = site / "rewind_daemon"
    # What an older install left: its modules, listed in its RECORD, and the
    # bytecode Python wrote for them; each fails loudly if it is ever imported.
    with (next(site.glob("rw-*.dist-info")) / "RECORD").open("a") as record:
        for rel in FLAT_LAYOUT:
            old = package / rel
            old.parent.mkdir(exist_ok=True)
            old.write_text("raise ImportError('a module of the old layout was imported')\n")
            subprocess.run([python, "-m", "py_compile", str(old)], check=True)
            record.write(f"rewind_daemon/{rel},,\n")
    assert fresh.rw("--version").returncode == 0  # the folders win over the old modules

    fresh.run("--no-rc")
    left = [rel for rel in FLAT_LAYOUT if (package / rel).exists()]
    assert left == [], f"the upgrade left {left}"
    assert not list(package.glob("__pycache__/checkpoints.*")) and not (package / "probes").exists()
    assert fresh.rw("--version").stdout.strip().endswith(__version__)
    code = "import rewind_daemon.checkpoints as c, rewind_daemon.guard as g; print(c.__file__, g.__file__)"  # noqa: E501
    where = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    assert "rewind_daemon/checkpoints/__init__.py" in where.stdout
    assert "rewind_daemon/guard/__init__.py" in where.stdout
    # and the installed rw works end to end: its daemon, its store
    assert fresh.rw("daemon", "start").returncode == 0
    assert json.loads(fresh.rw("sessions", "--json").stdout) == []


def test_no_rc_then_uninstall_purge(fresh):
    out = fresh.run("--no-rc").stdout
    assert "init bash" in out  # it says what to add by hand
    assert fresh.rw("--version").returncode == 0
    config = Path(fresh.rw("config", "path").stdout.strip())
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("ignore = ['^secret']\n")

    fresh.run("--uninstall", "--purge")
    assert not fresh.venv.exists() and not fresh.link.is_symlink()
    assert not (fresh.rw_home / "data").exists()
    assert not config.exists()
    # --no-rc at install time: the rc files were never touched, so neither
    # was there anything to remove from them.
    assert (fresh.home / ".bashrc").read_text() == BASHRC
    assert (fresh.home / ".zshrc").read_text() == ZSHRC
    assert not backups(fresh.home / ".bashrc") and not backups(fresh.home / ".zshrc")


def test_cycles_keep_one_backup_per_change_and_purge_leaves_nothing(fresh, tmp_path):
    # rw's own locations, not RW_HOME's: the runtime dir is chosen and recorded
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    del fresh.env["RW_HOME"]
    fresh.env["XDG_RUNTIME_DIR"] = str(runtime)
    bashrc = fresh.home / ".bashrc"
    for _ in range(2):
        fresh.run()
        fresh.run("--uninstall")
    # one copy of each text the files had before a change (the bashrc gained
    # the newline it lacked), not one per run
    hooked = BASHRC + "\n" + hook_line("bash")
    texts = [p.read_text() for p in backups(bashrc)]
    assert sorted(texts) == sorted([BASHRC, BASHRC + "\n", hooked])
    zsh_texts = [p.read_text() for p in backups(fresh.home / ".zshrc")]
    assert sorted(zsh_texts) == sorted([ZSHRC, ZSHRC + hook_line("zsh")])
    # new texts: the newest three are kept
    bashrc.write_text(BASHRC + "\n# edited\n")
    fresh.run()
    fresh.run("--uninstall")
    assert [p.read_text() for p in backups(bashrc)] == [
        hooked,
        BASHRC + "\n# edited\n",
        BASHRC + "\n# edited\n" + hook_line("bash"),
    ]
    assert bashrc.read_text() == BASHRC + "\n# edited\n"
    assert (runtime / "rw" / "daemon.lock").exists()  # a plain uninstall keeps it

    # the environment is gone already: --purge still finds every directory rw made
    out = fresh.run("--uninstall", "--purge").stdout
    assert f"deleted {runtime / 'rw'}" in out
    assert list(runtime.iterdir()) == []
    assert not (fresh.home / ".local/share/rw").exists()


def hook_line(shell: str) -> str:
    """The line install.sh adds for `shell`, with its newline."""
    rw = '"$HOME/.local/bin/rw"'
    return f'if [ -x {rw} ]; then eval "$({rw} init {shell})"; fi  {MARKER}\n'


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["--help"], 0, "Usage: ./install.sh"),
        (["-h"], 0, "--uninstall"),
        (["--frobnicate"], 2, "unknown option: --frobnicate"),
        (["--purge"], 2, "--purge only goes with --uninstall"),
    ],
)
def test_usage(args, code, text, tmp_path):
    proc = subprocess.run(
        ["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=30,
        env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == code
    assert text in (proc.stdout if code == 0 else proc.stderr)
    if code:
        assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # usage errors touch nothing
