"""rw import against what is not a history or not storable: a device, a file
too large, a command longer than rw records, text that is no text."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from rewind_daemon.timeline.importing import MAX_COMMAND, MAX_IMPORT

from ..conftest import RW, rw, steps_of


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([RW, *args], input=stdin, capture_output=True, timeout=30)


def refused(proc: subprocess.CompletedProcess, words: str) -> None:
    err = proc.stderr.decode()
    assert proc.returncode == 2, (proc.returncode, err)
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert words in err, err


def document(command: str) -> str:
    session = {"id": "x1", "started_at": 1700000000}
    steps = [{"step": 1, "command": command, "started_at": 1700000000}]
    return json.dumps({"format": "rw-session", "version": 1, "session": session, "steps": steps})


@pytest.mark.parametrize("where", ["command", "cwd", "key"])
def test_json_text_with_a_lone_surrogate_is_refused_in_one_line(rw_home, tmp_path, where):
    doc = json.loads(document("echo ok"))
    if where == "key":
        doc["steps"][0]["env"] = {"A\udcffB": "v"}
    else:  # (\udcff is the byte 0xff in a command: rw export writes it so)
        doc["steps"][0][where] = "a\ud800b" if where == "command" else "a\udcffb"
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))  # (\udcff escaped: valid JSON)
    refused(run("import", "json", str(path)), "lone surrogate")
    refused(run("import", "json", "-", stdin=path.read_bytes()), "lone surrogate")


def test_a_device_or_a_directory_is_not_imported(rw_home, tmp_path):
    refused(run("import", "bash", "/dev/zero"), "/dev/zero: not a regular file")
    refused(run("import", "zsh", str(tmp_path)), "Is a directory")


def test_a_file_larger_than_the_cap_is_refused_before_it_is_read(rw_home, tmp_path):
    big = tmp_path / "huge_history"
    with open(big, "wb") as fh:
        fh.truncate(MAX_IMPORT + 1)  # (sparse: nothing written)
    refused(run("import", "bash", str(big)), "64 MiB")
    # stdin too: what is read stops at the cap.
    proc = subprocess.Popen(
        [RW, "import", "json", "-"], stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        with open("/dev/zero", "rb") as zero:
            for _ in range((MAX_IMPORT >> 20) + 2):
                proc.stdin.write(zero.read(1 << 20))
        proc.stdin.close()
    except BrokenPipeError:
        pass
    assert proc.wait(30) == 2
    assert "64 MiB" in proc.stderr.read().decode()


def test_a_command_longer_than_rw_records_is_left_out(rw_home, tmp_path):
    path = tmp_path / "bash_history"
    with open(path, "w") as fh:
        fh.write("echo before\n" + "x" * (MAX_COMMAND + 1) + "\necho after\n")
    out = rw("import", "bash", str(path)).stdout
    assert "imported 2 steps" in out and "1 left out" in out, out
    assert [s["command"] for s in steps_of("import-bash-history")] == ["echo before", "echo after"]
    doc = tmp_path / "long.json"
    doc.write_text(document("y" * (MAX_COMMAND + 1)))
    refused(run("import", "json", str(doc)), "longer than rw records")
    assert os.path.getsize(doc) > MAX_COMMAND
