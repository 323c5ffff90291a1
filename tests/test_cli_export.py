"""rw export: a recorded bash session as a script that shellcheck passes and that
rebuilds the session's files, a Markdown runbook, and JSON that round-trips."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from rewind_daemon.cli import cli, share  # noqa: F401 - registers the commands

from .conftest import RW, rw, rw_json, steps_of, write_config

PRINTF_B = 'printf "%s\\n" "$GREETING" > b.txt'
SUB_C = 'cd sub && echo "$GREETING $LATE" > c.txt'


def record_build(shells, work: Path):
    """A bash session that builds files under `work`, with two failures."""
    sh = shells("bash")
    sh.run("rw name build")  # 1
    sh.run(f"cd {work}")  # 2
    sh.run("mkdir -p out/sub")  # 3
    sh.run("echo hello > out/a.txt")  # 4
    sh.run("cd out")  # 5
    sh.run("export GREETING='hi there'")  # 6
    sh.run(PRINTF_B)  # 7
    sh.run("export LATE=from-a-failed-step; false")  # 8: fails, its export is kept
    sh.run(SUB_C)  # 9
    sh.run("unset GREETING")  # 10
    sh.run('echo "${GREETING-unset}" > d.txt')  # 11
    sh.run("ls no-such-file")  # 12: fails
    sh.run("yes | head -n 2 > e.txt")  # 13: `yes` fails (SIGPIPE or EPIPE)
    return sh


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text() if p.is_file() else "<dir>"
        for p in sorted(root.rglob("*"))
    }


def shellcheck(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)


def body(script: str) -> list[str]:
    """The lines that run: no comments, no blank lines, no shebang or set line."""
    return [
        line
        for line in script.splitlines()
        if line.strip() and not line.startswith("#") and line != "set -euo pipefail"
    ]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GREETING", "LATE", "API_TOKEN")}
    return {**env, **extra}


@pytest.fixture
def build(daemon, shells, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    record_build(shells, work)
    assert [s["exit_code"] for s in steps_of("build")][7] == 1
    return work


def test_sh_export_passes_shellcheck_and_rebuilds_the_files(build, tmp_path):
    work = build
    recorded = tree(work)
    assert recorded["out/sub/c.txt"] == "hi there from-a-failed-step\n"
    script = tmp_path / "build.sh"
    rw("export", "build", "--format", "sh", "-o", str(script))
    text = script.read_text()
    assert os.access(script, os.X_OK)
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset -euo pipefail\n" in text
    check = shellcheck(script)
    assert check.returncode == 0, check.stdout
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    lines = body(text)
    # cd only where the directory changed other than by the command itself
    assert [x for x in lines if x.startswith("cd ")] == [
        f"cd {tmp_path / 'home'}",
        f"cd {work}",
        "cd out",
        SUB_C,
    ]
    # the session's own exports once; the failed step's export replayed after it
    assert lines.count("export GREETING='hi there'") == 1
    assert lines.count("export LATE=from-a-failed-step") == 1
    assert "false" not in text and "ls no-such-file" not in text
    assert "rw name build" not in lines and "#   rw name build" in text
    assert lines[-3:] == ["set +o pipefail", "yes | head -n 2 > e.txt", "set -o pipefail"]
    # Run it where nothing of the session is left: the same files come back.
    shutil.rmtree(work)
    work.mkdir()
    run = subprocess.run(
        ["bash", str(script)], cwd=tmp_path, env=clean_env(), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert tree(work) == recorded


def test_include_failed_comments_failed_steps_with_exit_codes(build, tmp_path):
    text = rw("export", "build", "--include-failed").stdout
    assert "# step 8 failed with exit code 1:\n#   export LATE=from-a-failed-step; false\n" in text
    assert "# step 12 failed with exit code 2:\n#   ls no-such-file\n" in text
    script = tmp_path / "with-failed.sh"
    script.write_text(text)
    assert shellcheck(script).returncode == 0
    assert body(text) == body(rw("export", "build").stdout)


def test_from_to_select_steps_and_set_up_their_state(build):
    text = rw("export", "build", "--from", "7", "--to", "9").stdout
    assert "steps 7 to 9" in text
    assert body(text) == [
        "export GREETING='hi there'",  # made by step 6, before the range
        f"cd {build}/out",
        PRINTF_B,
        "export LATE=from-a-failed-step",  # made by step 8, which failed
        SUB_C,
    ]
    for args, message in [
        (["--from", "9", "--to", "7"], "cannot export 9 to 7"),
        (["--to", "99"], "has steps 1 to"),
        (["--from", "0"], "Invalid value"),
    ]:
        bad = rw("export", "build", *args, check=False)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr


def test_redacted_values_stop_the_script_until_provided(daemon, shells, tmp_path):
    sh = shells("bash")
    sh.run("rw name secret")
    sh.run(f"cd {tmp_path}")
    sh.run("export API_TOKEN=s3cr3t-value; false")
    sh.run('test -n "$API_TOKEN" && echo ok > token-was-set')
    sid = sh.session_id()
    script = tmp_path / "secret.sh"
    rw("export", sid, "-o", str(script))
    text = script.read_text()
    assert "s3cr3t" not in text
    assert ': "${API_TOKEN:?set API_TOKEN: its recorded value was redacted}"' in text
    assert shellcheck(script).returncode == 0
    (tmp_path / "token-was-set").unlink()
    missing = subprocess.run(["bash", str(script)], env=clean_env(), capture_output=True, text=True)
    assert missing.returncode != 0 and "API_TOKEN" in missing.stderr
    assert not (tmp_path / "token-was-set").exists()
    given = subprocess.run(["bash", str(script)], env=clean_env(API_TOKEN="x"))
    assert given.returncode == 0 and (tmp_path / "token-was-set").exists()


def test_a_redacted_command_is_commented_out_and_stops_the_script(daemon, shells, tmp_path):
    sh = shells("bash")
    sh.run("rw name login")
    sh.run("curl -s --password hunter2 file:///dev/null || true")
    script = tmp_path / "login.sh"
    rw("export", "login", "-o", str(script))
    text = script.read_text()
    assert "hunter2" not in text and "#   curl -s --password <redacted>" in text
    assert shellcheck(script).returncode == 0
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert run.returncode == 1 and "step 2 held a redacted secret" in run.stderr


def test_md_runbook_has_a_table_and_fences_that_survive_backticks(daemon, shells, tmp_path):
    sh = shells("bash")
    sh.run("rw name notes")
    sh.run(f"cd {tmp_path}")
    sh.run("echo '```' > ticks.txt")
    sh.run("echo a | tr a b")
    sh.run("(exit 3)")
    md = rw("export", "notes", "--format", "md").stdout
    assert md.startswith("# notes\n")
    assert "| Step | Command | Exit | Duration | Directory |" in md
    assert "| 4 | `echo a \\| tr a b` | 0 |" in md
    assert "| 5 | `(exit 3)` | 3 |" in md
    # the fence is longer than the backtick run in the command
    assert "\n````bash\necho '```' > ticks.txt\n````\n" in md
    assert "exit code 3" in md


def docs_without_ids(doc: dict) -> dict:
    """The document but for what an import makes its own: the id and the origin."""
    doc = json.loads(json.dumps(doc))
    doc["session"].pop("id")
    doc["session"].pop("origin")
    return doc


def test_json_round_trips(build, tmp_path):
    text = rw("export", "build", "--format", "json").stdout
    doc = json.loads(text)
    assert doc["format"] == "rw-session" and doc["version"] == 1
    assert len(doc["steps"]) == 13 and doc["steps"][7]["exit_code"] == 1
    assert doc["steps"][5]["env"]["GREETING"] == "hi there"
    first_stage, last_stage = doc["steps"][12]["pipestatus"]
    assert first_stage != 0 and last_stage == 0
    sid = doc["session"]["id"]
    path = tmp_path / "build.json"
    path.write_text(text)
    # an import is a copy under an id of its own, the same session in all but
    # its id and origin (--new-id is still accepted)
    copy = rw_json("import", "json", str(path), "--new-id")
    assert copy["session"] != sid and copy["steps"] == 13 and copy["name"] == "build"
    copied = json.loads(rw("export", copy["session"], "--format", "json").stdout)
    assert copied["session"]["origin"] == "import"
    assert docs_without_ids(copied) == docs_without_ids(doc)
    # into another store, read from stdin: the same again
    other = tmp_path / "other-home"
    write_config(other, "[daemon]\nautostart = false\n")
    env = {**os.environ, "RW_HOME": str(other)}
    imported = subprocess.run(
        [RW, "import", "json"], input=text, env=env, capture_output=True, text=True
    )
    assert imported.returncode == 0, imported.stderr
    assert "(build)" in imported.stdout and sid not in imported.stdout
    back = json.loads(rw("export", "build", "--format", "json", env=env).stdout)
    assert docs_without_ids(back) == docs_without_ids(doc)
    logged = rw_json("log", "build")
    assert [s.pop("session") for s in logged] == [sid] * 13
    other_log = json.loads(rw("log", "build", "--json", env=env).stdout)
    assert {s.pop("session") for s in other_log} == {back["session"]["id"]}
    assert other_log == logged


@pytest.mark.parametrize(
    "content,message",
    [
        ("not json", "not a JSON document"),
        ('{"format": "other"}', "not a session exported by rw export"),
        ('{"format": "rw-session", "version": 9}', "newer than this rw"),
        ('{"format": "rw-session", "version": 1, "session": {"id": 5}}', "session.id must be"),
        (
            '{"format": "rw-session", "version": 1, "session": {"id": "x", "started_at": 1},'
            ' "steps": [{"command": "ls"}]}',
            "steps[0].started_at must be a number",
        ),
    ],
)
def test_bad_json_is_one_line_exit_2(rw_home, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    proc = rw("import", "json", str(path), check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr


def test_export_and_import_have_help():
    for name in ("export", "import"):
        cmd = cli.commands[name]
        assert cmd.help and "Example" in cmd.help
        options = [p for p in cmd.params if isinstance(p, click.Option)]
        assert options and all(p.help for p in options)


def test_recorded_output_is_exported_and_round_trips(daemon, shells, tmp_path):
    sh = shells("bash")
    sh.run("rw name out-src")
    sh.run("printf 'line one\\nline ``two``\\n'")
    binary = tmp_path / "binary.out"  # created only for the replay: not shown in the terminal
    sh.run(f"cat {binary} 2>/dev/null || true")
    binary.write_bytes(b"\xffbinary\n")
    replay = subprocess.run([RW, "replay", "out-src", "--from", "2"], capture_output=True)
    assert replay.returncode == 0 and b"\xffbinary" in replay.stdout
    replayed = next(s["id"] for s in rw_json("sessions") if s["origin"] == "replay")
    md = rw("export", replayed, "--format", "md").stdout
    assert "Output:" in md and "line one\nline ``two``" in md
    assert "````text" in md or "```text" in md
    doc = json.loads(rw("export", replayed, "--format", "json").stdout)
    assert doc["steps"][1]["output"] == "line one\nline ``two``\n"
    assert "output_base64" in doc["steps"][2]
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    rw("import", "json", str(path), "--new-id", "--name", "out-copy")
    copy = "out-copy"
    again = json.loads(rw("export", copy, "--format", "json").stdout)
    assert [s.get("output") for s in again["steps"]] == [s.get("output") for s in doc["steps"]]
    assert again["steps"][2]["output_base64"] == doc["steps"][2]["output_base64"]
