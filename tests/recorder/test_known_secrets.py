"""A secret variable's value, printed by a later command or typed out in one,
is stored nowhere: the real hooks, recorder, daemon and store."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ..conftest import RW, rw, rw_json, wait_for
from .test_hook_marks import Started, recorded_rc, write_rc

TOKEN, LOWER, EARLY = "tokval111aaa", "lowerpass333", "early-secret-777"
LINES = [
    f"export API_TOKEN={TOKEN}",
    "echo $API_TOKEN",
    f"export db_pass={LOWER}",  # a lower-case name: masked by name too
    "echo pw:$db_pass",
    f"echo typed {TOKEN} {LOWER}",  # the values typed out in a command
    # Printed in the step that exports it: its end (and environment) comes after.
    "export SECRET_E=$(printf early-%s-777 secret); echo early:$SECRET_E",
]


def every_file_below(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


@pytest.mark.parametrize("daemon_runs", [True, False], ids=["live", "one-batch"])
@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_a_secret_variables_value_is_masked_in_later_commands_and_output(
    no_autostart, tmp_path, kind, daemon_runs
):
    if daemon_runs:
        rw("daemon", "start")
    home = tmp_path / "home"
    write_rc(home, kind, recorded_rc(kind))
    sh = Started([RW, "record", kind], home=home, rw_home=no_autostart)
    try:
        for line in LINES:
            sh.run(line)
        assert sh.exit() == 0
    finally:
        sh.close()
    if not daemon_runs:
        rw("daemon", "start")  # everything the spools hold, ingested in one go
    sid = wait_for(lambda: next((s["id"] for s in rw_json("sessions")), None), 20)

    def shown(n: int) -> dict | None:
        doc = rw_json("show", sid, str(n))
        return doc if doc.get("output") is not None else None

    last = wait_for(lambda: shown(len(LINES)), 20)
    assert last["output"].strip() == "early:<redacted>"
    assert shown(2)["output"].strip() == "<redacted>"
    assert shown(4)["output"].strip() == "pw:<redacted>"
    assert [s["command"] for s in rw_json("log", sid)][2:5] == [
        "export db_pass=<redacted>",
        "echo pw:$db_pass",
        "echo typed <redacted> <redacted>",
    ]
    raw = subprocess.run([RW, "show", sid, "2", "--raw"], capture_output=True, check=True).stdout
    assert b"<redacted>" in raw
    assert rw("search", TOKEN, check=False).stdout.strip() == ""
    rw("daemon", "stop")
    stored = every_file_below(no_autostart / "data")
    for secret in (TOKEN, LOWER, EARLY):
        assert secret.encode() not in stored, secret
