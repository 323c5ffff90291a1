"""rw export: a recorded bash session as a script that shellcheck passes and that
rebuilds the session's files, a Markdown runbook, and JSON that round-trips."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import click
import pytest

from rewind_daemon.cli import cli, share  # noqa: F401 - registers the commands
from rewind_daemon.timeline.startenv import untrusted

from ..conftest import RW, rw, rw_json, steps_of, write_config

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
    """The lines that run, with each step's command as it was typed (unquoted from
    its eval): no comments, blank lines, step checks or their definition."""
    lines = iter(script.split("\n}\n", 1)[1].splitlines())  # after __rw_step_ok's
    out = []
    for line in lines:
        if not line.strip() or line.startswith(("#", "__rw_step_ok ")):
            continue
        if line.startswith("eval "):
            quoted = line[5:]
            while True:  # until the quoted command is whole
                try:
                    line = shlex.split(quoted)[0]
                    break
                except ValueError:
                    quoted += "\n" + next(lines)
        out.append(line)
    return out


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
    assert stat.S_IMODE(script.stat().st_mode) == 0o600
    # no -e, -u or pipefail of its own: each step runs under the options it had live
    assert text.startswith("#!/usr/bin/env bash\n") and "\nset " not in text
    check = shellcheck(script)
    assert check.returncode == 0, check.stdout
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    lines = body(text)
    # cd only where the directory changed other than by the command itself
    assert [x for x in lines if x.startswith("cd ")] == [
        f"cd -- {tmp_path / 'home'} || exit",
        f"cd {work}",
        "cd out",
        SUB_C,
    ]
    # the session's own exports once; the failed step's export replayed after it
    assert lines.count("export GREETING='hi there'") == 1
    assert lines.count("export LATE=from-a-failed-step") == 1
    assert "false" not in text and "ls no-such-file" not in text
    assert "rw name build" not in lines and "#   rw name build" in text
    assert lines[-1] == "yes | head -n 2 > e.txt"  # succeeds without pipefail, as it did
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
        f"cd -- {build}/out || exit",
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
    """The document but for what an import makes its own: the id and the origin,
    and the variables an import leaves out of its environments (PATH, ...)."""
    doc = json.loads(json.dumps(doc))
    doc["session"].pop("id")
    doc["session"].pop("origin")
    for env in [doc.get("start_env")] + [s.get("env") for s in doc["steps"]]:
        for name in [n for n in env or {} if untrusted(n)]:
            del env[name]
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


# --- hostile values, each step's own status, file modes -------------------------------


def import_document(path: Path, session: dict, steps: list[dict], start_env=None) -> str:
    """`rw import json` of a document made of these parts; returns the new session id."""
    times = {"started_at": 1700000000}
    doc = {
        "format": "rw-session",
        "version": 1,
        "session": {"id": "doc", **times, **session},
        "start_env": start_env,
        "steps": [
            {"started_at": 1700000001 + i, "ended_at": 1700000001 + i, **s}
            for i, s in enumerate(steps)
        ],
    }
    path.write_text(json.dumps(doc))
    return rw_json("import", "json", str(path), "--new-id")["session"]


def run_script(script: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script)], cwd=cwd, env=clean_env(**env), capture_output=True, text=True
    )


def test_hostile_values_reach_the_script_quoted_or_escaped(rw_home, tmp_path):
    """A session name, host, shell, directory, variable names and values and commented
    commands that would each run `touch pwned-*` if written into the script as they are."""
    run_dir = tmp_path / "run"
    hostile_dir = run_dir / "d'$(touch pwned-cwd)'\n;touch pwned-cwd2;\x1b]0;t\x07"
    hostile_dir.mkdir(parents=True)
    value = "$(touch pwned-value)'\n`touch pwned-value2`\x1b[31m\u202e\\"
    env = {"V": value, "BAD;touch pwned-name": "x", "A\ntouch pwned-name2": "y"}
    where = {"cwd_before": str(hostile_dir), "cwd_after": str(hostile_dir)}
    sid = import_document(
        tmp_path / "hostile.json",
        {
            "name": "n\ntouch pwned-session-name\n",
            "host": "h\ntouch pwned-host",
            "shell": "bash\ntouch pwned-shell",
        },
        [
            {"command": "true", "exit_code": 0, "env": {}, **where},
            {"command": "false #\ntouch pwned-failed", "exit_code": 1, "env": env, **where},
            {"command": 'printf %s "$V" > v.out', "exit_code": 0, "env": env, **where},
            {"command": "rw name x\ntouch pwned-rw", "exit_code": 0, "env": env, **where},
            {"command": "sleep 1\ntouch pwned-running", "exit_code": None, "ended_at": None},
        ],
        start_env={},
    )
    for args in ([], ["--include-failed"], ["--from", "2"]):
        script = tmp_path / "hostile.sh"
        rw("export", sid, "-o", str(script), *args)
        (hostile_dir / "v.out").unlink(missing_ok=True)
        run = run_script(script, run_dir)
        text = script.read_text()
        assert not list(tmp_path.rglob("pwned-*")), (args, text)
        assert run.returncode == 0, run.stderr
        assert (hostile_dir / "v.out").read_text() == value  # the value, exactly
        assert text.startswith("#!/usr/bin/env bash\n")
        assert "# rw session " in text and "(n\\ntouch pwned-session-name\\n)" in text
        assert "\x1b" not in text and "\u202e" not in text  # escaped, for who reads it
        assert shellcheck(script).returncode == 0, shellcheck(script).stdout


def test_a_name_given_with_rw_name_cannot_inject(daemon, shells, tmp_path):
    sh = shells("bash")
    sh.run(f"cd {tmp_path}")
    sh.run("rw name $'x\\ntouch pwned-name'")
    sh.run("touch made")
    script = tmp_path / "named.sh"
    rw("export", sh.session_id(), "-o", str(script))
    (tmp_path / "made").unlink()
    run = run_script(script, tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "made").exists() and not list(tmp_path.rglob("pwned-*"))
    assert "(x\\ntouch pwned-name)" in script.read_text()


def test_each_step_succeeds_or_fails_as_it_did_when_recorded(daemon, shells, tmp_path):
    sh = shells("bash")
    sh.run(f"cd {tmp_path}")
    sh.run("touch f")
    steps = [
        "grep -q nothing f; echo after > a.txt",
        "true | false | true; echo ok > b.txt",
        'echo "${RW_UNSET_VAR}" > c.txt',
        "cat input.txt > copy.txt",
        "touch last",
    ]
    (tmp_path / "input.txt").write_text("in\n")
    for command in steps:
        sh.run(command)
    assert [s["exit_code"] for s in steps_of(sh.session_id())] == [0] * 7
    script = tmp_path / "steps.sh"
    rw("export", sh.session_id(), "-o", str(script))
    assert shellcheck(script).returncode == 0, shellcheck(script).stdout
    made = ["a.txt", "b.txt", "c.txt", "copy.txt", "last"]
    for name in made:
        (tmp_path / name).unlink()
    run = run_script(script, tmp_path)
    assert run.returncode == 0, run.stderr
    assert all((tmp_path / name).exists() for name in made)
    # A step that succeeded when recorded and fails now stops the script, named.
    for name in made:
        (tmp_path / name).unlink()
    (tmp_path / "input.txt").unlink()
    run = run_script(script, tmp_path)
    assert run.returncode == 1
    assert "rw export: step 6 failed with exit status 1; it succeeded when recorded" in run.stderr
    assert (tmp_path / "c.txt").exists() and not (tmp_path / "last").exists()


def test_a_broken_step_cannot_swallow_the_steps_after_it(rw_home, tmp_path):
    """An unterminated heredoc or quote in one step stays in that step."""
    ok = {"exit_code": 0}
    sid = import_document(
        tmp_path / "broken.json",
        {"name": "broken", "shell": "bash"},
        [
            {"command": "cat <<EOF > here.txt\nhello", **ok},
            {"command": "touch after-heredoc", **ok},
            {"command": "echo 'unterminated", **ok},
            {"command": "touch not-reached", **ok},
        ],
    )
    script = tmp_path / "broken.sh"
    rw("export", sid, "-o", str(script))
    run = run_script(script, tmp_path)
    assert (tmp_path / "here.txt").read_text() == "hello\n"
    assert (tmp_path / "after-heredoc").exists()
    # the open quote is a syntax error in its own step, which succeeded when recorded
    assert run.returncode == 2 and "rw export: step 3 failed with exit status 2" in run.stderr
    assert not (tmp_path / "not-reached").exists()


def test_a_history_step_that_fails_stops_the_script(rw_home, tmp_path):
    """Imported history has no exit codes: a failing step stops the script, saying so."""
    history = tmp_path / "history"
    history.write_text("echo fine > fine.txt\nrw-no-such-command\ntouch never\n")
    sid = rw_json("import", "bash", str(history))["session"]
    script = tmp_path / "history.sh"
    rw("export", sid, "-o", str(script))
    run = run_script(script, tmp_path)
    assert run.returncode == 127 and (tmp_path / "fine.txt").exists()
    assert "step 2 failed with exit status 127; its status was not recorded" in run.stderr
    assert not (tmp_path / "never").exists()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_written_with_o_are_private_unless_mode_says(daemon, shells, tmp_path):
    sh = shells("bash")
    sh.run("rw name modes")
    sh.run(f"touch {tmp_path}/ran")
    old = os.umask(0o022)
    try:
        for fmt in ("sh", "md", "json"):
            path = tmp_path / f"out.{fmt}"
            rw("export", "modes", "--format", fmt, "-o", str(path))
            assert mode_of(path) == 0o600, fmt
        existing = tmp_path / "existing.sh"
        existing.write_text("old\n")
        existing.chmod(0o644)
        rw("export", "modes", "-o", str(existing))
        assert mode_of(existing) == 0o600 and existing.read_text().startswith("#!")
        rw("export", "modes", "-o", str(existing), "--mode", "0755")
        assert mode_of(existing) == 0o755
        (tmp_path / "ran").unlink()
        assert subprocess.run([str(existing)], cwd=tmp_path).returncode == 0
        assert (tmp_path / "ran").exists()
        rw("export", "modes", "-o", str(existing), "--mode", "640")
        assert mode_of(existing) == 0o640
    finally:
        os.umask(old)
    for args, message in [
        (["-o", str(existing), "--mode", "999"], "'999' is not a mode like 0600 or 0755"),
        (["-o", str(existing), "--mode", "4755"], "is not a mode"),
        (["-o", str(existing), "--mode", "u+x"], "is not a mode"),
        (["--mode", "0700"], "--mode goes with -o FILE"),
    ]:
        bad = rw("export", "modes", *args, check=False)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr
    assert mode_of(existing) == 0o640


# --- the output of live shells recorded by rw record ----------------------------------


def test_md_and_json_show_the_text_of_a_live_shells_output(live, tmp_path):
    """rw record bash with rw's hooks: the runbook shows what a reader of the
    terminal saw (no escapes, the last state of a progress bar), fenced past
    any backtick run, and only the last lines of a long output, saying so."""
    sh = live("bash")
    sh.run(r"printf '\033[1;31mred\033[0m plain\n'")  # 1
    sh.run(r"printf '  0%%\r 50%%\r100%%\n'")  # 2
    sh.run("printf 'a ```` run\\n'")  # 3
    sh.run("seq 1 120")  # 4
    sh.run("true")  # 5: prints nothing
    sh.run(r"printf 'x\0y\0\377z\n'")  # 6: not text
    sid = sh.finish()
    md = rw("export", sid, "--format", "md", "--to", "6").stdout
    assert "Output:\n\n```text\nred plain\n```\n" in md
    assert "\\e[1;31m" not in md and "plain\\r" not in md and "0%\\r" not in md
    assert "Output:\n\n```text\n100%\n```\n" in md
    assert "Output:\n\n`````text\na ```` run\n`````\n" in md
    tail = "\n".join(str(n) for n in range(71, 121))
    note = f"Output (the last 50 of 120 lines; `rw show {sid} 4 --output` prints all of it):"
    assert f"{note}\n\n```text\n{tail}\n```\n" in md
    assert "\n70\n" not in md
    step5 = md[md.index("## Step 5") : md.index("## Step 6")]
    assert "Output" not in step5
    assert f"Output: 8 bytes, not text (`rw show {sid} 6 --raw` has them)." in md
    doc = json.loads(rw("export", sid, "--format", "json", "--to", "4").stdout)
    first = doc["steps"][0]
    assert first["output"] == "\x1b[1;31mred\x1b[0m plain\r\n"  # the bytes, for rw import
    assert first["output_text"] == "red plain\n"
    assert (first["output_bytes"], first["output_truncated"]) == (len(first["output"]), False)
    assert doc["steps"][1]["output_text"] == "100%\n"


def test_md_says_when_the_cap_left_part_of_an_output_out(live, rw_home):
    write_config(rw_home, "[record]\nmax_step_output = 4096\n")
    rw("daemon", "stop")
    rw("daemon", "start")
    sh = live("bash")
    sh.run("seq 1 5000")
    sid = sh.finish()
    md = rw("export", sid, "--format", "md", "--to", "1").stdout
    head = md[md.index("Output (") : md.index(":\n\n```text")]
    assert "bytes were left out when recorded (the middle: over the output cap)" in head
    assert md.rstrip().endswith("5000\n```") or "\n5000\n```\n" in md
