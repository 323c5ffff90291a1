"""rw diff on real recorded runs."""

from __future__ import annotations

import codecs
import json
import random
import re
from pathlib import Path

import pexpect

from rewind_daemon.store import StepRow
from rewind_daemon.timeline import diffing
from rewind_daemon.timeline.history import Output

from ..conftest import RW, rw, rw_json, write_config


def test_inserted_step_and_changed_exit_code_are_exactly_the_differences(daemon, shells, tmp_path):
    flag = tmp_path / "flag"
    run = ["echo one", "echo two", f"test -e {flag}", "echo four", "echo five"]
    a = shells("bash")
    for cmd in run:
        a.run(cmd)
    flag.write_text("now it exists")
    b = shells("zsh")
    for cmd in run[:2] + ["echo inserted"] + run[2:]:
        b.run(cmd)
    run_a, run_b = a.session_id(), b.session_id()
    proc = rw("diff", run_a, run_b, "--json", check=False)
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    different = [s for s in result["steps"] if s["status"] != "same"]
    assert different == [
        {"status": "only_b", "a": None, "b": 3},
        {"status": "exit_code", "a": 3, "b": 4},
    ]
    assert result["divergence"] == {"a": 3, "b": 3}
    assert len(result["steps"]) == 6  # 5 commands, and the insertion
    text = rw("diff", run_a, run_b, check=False).stdout
    assert "diverge at A step 3, B step 3" in text
    assert "+     -     3  echo inserted" in text
    assert "exit 1 → 0" in text


def test_identical_runs_exit_0(daemon, shells):
    sh = shells("bash")
    sh.run("rw name same")
    sh.run("echo x")
    rw("branch", "same", "2", "--name", "copy")
    proc = rw("diff", "same", "copy", "--json", check=False)
    result = json.loads(proc.stdout)
    assert proc.returncode == 0, result
    assert result["divergence"] is None
    assert {s["status"] for s in result["steps"]} == {"same"}


def _steps(commands: list[str], codes: list[int] | None = None) -> list[StepRow]:
    codes = codes or [0] * len(commands)
    return [
        StepRow("s", i + 1, c, "/", "/", float(i), float(i) + 0.1, code, "0", None)
        for i, (c, code) in enumerate(zip(commands, codes))
    ]


def test_alignment_keeps_later_steps_matched():
    a = _steps([f"cmd {i}" for i in range(100)])
    b = _steps(["new first"] + [f"cmd {i}" for i in range(100) if i != 50])
    result = diffing.compare(a, b)
    statuses = [p.status for p in result.pairs]
    assert statuses.count("only_b") == 1 and statuses.count("only_a") == 1
    assert statuses.count("same") == 99
    assert result.divergence == (1, 1)


def test_replaced_command():
    result = diffing.compare(_steps(["a", "b", "c"]), _steps(["a", "B", "c"]))
    assert [p.status for p in result.pairs] == ["same", "command", "same"]
    assert result.to_json()["divergence"] == {"a": 2, "b": 2}


def test_recorded_outputs_are_compared(daemon, shells, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("v1\n")
    sh = shells("bash")
    sh.run("rw name src")
    sh.run(f"cat {data}")
    sh.run("echo same")
    assert rw("replay", "src", "--from", "2").returncode == 0
    data.write_text("v2\n")
    assert rw("replay", "src", "--from", "2").returncode == 0
    first, second = [s["id"] for s in reversed(rw_json("sessions")) if s["origin"] == "replay"]
    proc = rw("diff", first, second, "--json", check=False)
    result = json.loads(proc.stdout)
    assert proc.returncode == 1
    (differs,) = [s for s in result["steps"] if s["status"] != "same"]
    assert (differs["a"], differs["b"], differs["status"]) == (2, 2, "output")
    assert differs["output"]["diff"] == ["@@ -1 +1 @@", "-v1", "+v2"]


# --- the outputs of live shells recorded by rw record ---------------------------------

TOKEN = "ghp_" + "Zx9" * 12  # a GitHub token, as redact.py's rules know them


def write_files(work: Path, version: int) -> None:
    """What the steps below read: run A sees version 1, run B version 2."""
    lines = [f"line {n}" for n in range(1, 41)]
    if version == 2:
        lines[19], lines[34] = "line 20 changed", "line 35 changed"
    (work / "data.txt").write_text("\n".join(lines) + "\n")
    colour = "31" if version == 1 else "32"  # only the colour differs
    (work / "colour.txt").write_bytes(f"\x1b[{colour}mok\x1b[0m\n".encode())
    (work / "blob.bin").write_bytes(bytes([0, 1, 2, 255, version]) * 50)
    (work / "secret.txt").write_text(f"token {TOKEN[:-1]}{version} for v{version}\n")
    (work / "big.txt").write_text("".join(f"{n}\n" for n in range(1, 3001 + version)))
    if version == 2:
        (work / "late.txt").write_text("now here\n")


def steps(work: Path) -> list[str]:
    return [
        f"cat {work}/data.txt",  # 1
        f"cat {work}/colour.txt",  # 2: the text is the same
        f"cat {work}/late.txt",  # 3: fails in A, not in B
        f"cat {work}/blob.bin",  # 4: binary
        f"cat {work}/secret.txt",  # 5: a masked secret
        f"cat {work}/big.txt",  # 6: over the cap
    ]


def record_run(live, work: Path, version: int) -> str:
    write_files(work, version)
    sh = live("bash")
    for command in steps(work):
        sh.run(command)
    return sh.finish()


def test_diff_shows_how_the_outputs_of_live_shells_differ(live, rw_home, tmp_path):
    write_config(rw_home, "[record]\nmax_step_output = 4096\n")
    rw("daemon", "stop")
    rw("daemon", "start")
    work = tmp_path / "work"
    work.mkdir()
    a, b = record_run(live, work, 1), record_run(live, work, 2)
    proc = rw("diff", a, b, "--json", check=False)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    pairs = {p["a"]: p for p in doc["steps"]}
    assert pairs[1]["status"] == "output"
    first = pairs[1]["output"]
    assert first["diff"][:6] == ["@@ -17,7 +17,7 @@", " line 17", " line 18", " line 19",
                                 "-line 20", "+line 20 changed"]  # fmt: skip
    assert len(first["diff"]) == 12 and first["more"] == 2 and first["changed_lines"] == 4
    assert pairs[2] == {"status": "same", "a": 2, "b": 2}  # colours alone are no difference
    assert pairs[3]["status"] == "exit_code"
    assert (
        "-cat: " in pairs[3]["output"]["diff"][1] and pairs[3]["output"]["diff"][2] == "+now here"
    )
    binary = pairs[4]["output"]
    assert binary["a"]["binary"] and binary["diff"] == [] and pairs[4]["status"] == "output"
    secret = pairs[5]["output"]["diff"]
    assert secret == ["@@ -1 +1 @@", "-token <redacted> for v1", "+token <redacted> for v2"]
    capped = pairs[6]["output"]
    assert capped["a"]["truncated"] and capped["b"]["truncated"]
    assert any("bytes left out ...]" in line for line in capped["diff"])  # the text's mark
    full_doc = json.loads(rw("diff", a, b, "--json", "--full", check=False).stdout)
    assert "+3002" in next(p for p in full_doc["steps"] if p["a"] == 6)["output"]["diff"]
    assert TOKEN not in proc.stdout

    text = rw("diff", a, b, check=False).stdout
    assert "\x1b" not in text  # no colour into a pipe
    at = text.index(f"o     1     1  cat {work}/data.txt\n")
    assert text[at:].split("\n")[1:4] == [
        " " * 14 + "@@ -17,7 +17,7 @@", " " * 14 + " line 17", " " * 14 + " line 18",
    ]  # fmt: skip
    assert " " * 14 + "... 2 more line(s) differ (rw diff --full shows all)" in text
    assert f"!     3     3  cat {work}/late.txt   exit 1 → 0" in text
    assert "binary output differs: A 250 bytes, B 250 bytes" in text
    assert "A's output: " in text and "bytes left out when recorded (over the cap)" in text
    assert f"=     2     2  cat {work}/colour.txt" not in text
    full = rw("diff", a, b, "--full", check=False).stdout
    assert "+line 35 changed" in full and "more line(s) differ" not in full
    quiet = rw("diff", a, b, "--output-lines", "0", check=False).stdout
    assert "output differs: 4 line(s) (rw diff --output-lines N shows them)" in quiet
    assert "line 20" not in quiet

    # on a terminal, in colour
    term = pexpect.spawn(RW, ["diff", a, b], encoding="utf-8", timeout=30)
    term.expect(pexpect.EOF)
    assert "\x1b[31m-line 20\x1b[0m" in term.before and "\x1b[32m+line 20 changed" in term.before


def test_a_step_whose_output_only_one_run_recorded_is_not_compared(live, shells, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    a = record_run(live, work, 1)
    sh = shells("bash")  # not under rw record: no output
    sh.p._decoder = codecs.getincrementaldecoder("utf-8")("replace")  # (the binary step)
    write_files(work, 2)
    for command in steps(work):
        sh.run(command)
    b = sh.session_id()
    doc = json.loads(rw("diff", a, b, "--json", check=False).stdout)
    first = next(p for p in doc["steps"] if p["a"] == 1)
    assert first == {"status": "same", "a": 1, "b": 1, "output_recorded": "a"}
    text = rw("diff", a, b, check=False).stdout
    assert f"(the output of 6 matched step(s) was recorded only in A ({a}): not compared)" in text


def _output(lines: list[str]) -> Output:
    text = "".join(x + "\n" for x in lines)
    return Output(text.encode(), text, len(text), 0, True)


def _patched(a: list[str], diff: list[str]) -> list[str]:
    """`a` with the unified diff `diff` applied, as patch would."""
    out, pos = [], 0
    for line in diff:
        if line.startswith("@@"):
            m = re.match(r"@@ -(\d+)(?:,(\d+))? ", line)
            assert m is not None
            start = int(m.group(1)) - (m.group(2) != "0")
            out += a[pos:start]
            pos = start
        elif line[0] in " -":
            assert a[pos] == line[1:]
            pos += 1
            out += [line[1:]] if line[0] == " " else []
        else:
            out.append(line[1:])
    return out + a[pos:]


def test_output_diffs_turn_a_into_b():
    rng = random.Random(14)
    for _ in range(500):
        a = [rng.choice("abcde") for _ in range(rng.randrange(0, 30))]
        b = [x for x in a if rng.random() > 0.2] + [rng.choice("xyz") for _ in range(3)]
        if rng.random() < 0.2:
            rng.shuffle(b)
        found = diffing.diff_outputs(_output(a), _output(b), limit=None)
        assert _patched(a, found.lines if found else []) == b


def test_long_outputs_are_matched_in_their_first_lines_unless_all_is_asked_for():
    a = [f"line {n}" for n in range(100_000)]
    b = list(a)
    random.Random(3).shuffle(b)  # the worst case of matching: slow over all of it
    shown = diffing.diff_outputs(_output(a), _output(b))
    assert shown is not None and shown.more is None and shown.changed is None
    assert len(shown.lines) == diffing.OUTPUT_LINES and shown.lines[1] == "-line 0"
    shifted = diffing.diff_outputs(_output(a), _output(a[1:] + ["new last"]))
    assert shifted is not None and shifted.lines[:2] == ["@@ -1,4 +1,3 @@", "-line 0"]
    assert all(not x.startswith("+") for x in shifted.lines)  # the cut's own hunk is left out
    whole = diffing.diff_outputs(_output(a), _output(a[1:] + ["new last"]), limit=None)
    assert whole is not None and whole.changed == 2 and whole.lines[-1] == "+new last"
