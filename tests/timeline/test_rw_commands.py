"""Which command lines are rw's own: one classifier for rw back, rw log and replay."""

from __future__ import annotations

import pytest

from rewind_daemon.timeline.rw_commands import rw_verb


@pytest.mark.parametrize(
    ("line", "verb"),
    [
        ("rw back 2", "back"),
        ("rw back 2 --dry-run", "back"),
        ("\\rw log", "log"),
        ("'rw' show 3", "show"),
        ("command rw back", "back"),
        ("/home/me/.local/bin/rw replay current", "replay"),
        ("RW_X=1 OTHER='a b' rw sessions", "sessions"),
        ("env -u HOME rw log", "log"),
        ("sudo -u root rw guard -- ./install.sh", "guard"),
        ("time rw log | less", "log"),
        ("(rw log)", "log"),
        ("rw log; ls", "log"),
        ("rw", ""),
        ("rw --help", ""),
        ("rw 'unclosed", ""),
        ("ls; rw log", None),
        ("echo rw back", None),
        ("rwx back", None),
        ("cd ~/src/rw", None),
        ("grep -r rw .", None),
        ("./rw-tool back", None),
        ("", None),
    ],
)
def test_rw_verb(line, verb):
    assert rw_verb(line) == verb


def test_an_exported_script_leaves_out_every_form_of_rw_command(rw_home, tmp_path):
    """rw export uses the same classifier: each of these is commented out, and the
    script runs the other steps (old code ran `\\rw log`, VAR=x rw ..., paths)."""
    import subprocess

    from ..cli.test_cli_export import import_document
    from ..conftest import RW, rw

    ok = {"exit_code": 0, "cwd_before": str(tmp_path), "cwd_after": str(tmp_path)}
    forms = ["\\rw log", "RW_X=1 rw back 2", f"{RW} replay somewhere", "command rw show 1"]
    sid = import_document(
        tmp_path / "s.json", {"name": "forms", "shell": "bash"},
        [{"command": "echo first >> ran.txt", **ok}, *({"command": f, **ok} for f in forms),
         {"command": "echo last >> ran.txt", **ok}],
    )  # fmt: skip
    script = rw("export", sid, "--format", "sh").stdout
    for number, form in enumerate(forms, 2):
        assert f"# step {number}, an rw command, is left out:" in script, form
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ran.txt").read_text() == "first\nlast\n"
