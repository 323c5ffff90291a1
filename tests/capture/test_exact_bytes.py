"""Commands and directories whose bytes are not UTF-8 are kept exact, from the
hooks through the store to every reader: rw log and show (escaped), search
(their text form), export (the bytes themselves in the script), replay, rw
back and rw diff. (Environment values are tested in timeline/test_travel.py.)"""

from __future__ import annotations

import codecs
import json
import subprocess

import pytest

from ..conftest import rw, rw_json, steps_of

SHELLS = ["bash", "zsh"]
# Typed into the shell as the bytes themselves: 0xff and 0xfe are never UTF-8.
RAW = "echo inv\udcff\udcfe"


@pytest.fixture(params=SHELLS)
def kind(request):
    return request.param


def bytes_shell(shells, kind):
    """A shell whose terminal takes and gives bytes that are not UTF-8 (as
    surrogates, both ways)."""
    sh = shells(kind)
    sh.p._encoder = codecs.getincrementalencoder("utf-8")("surrogateescape")
    sh.p._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    return sh


def hexed(sh, line: str) -> str:
    return sh.run(f"{line} | od -An -tx1 | tr -d ' \\n'; echo")


def test_back_goes_to_a_directory_whose_name_is_not_utf8(daemon, shells, kind, tmp_path):
    sh = bytes_shell(shells, kind)
    where = tmp_path / "x"
    where.mkdir()
    sh.run(f"mkdir {where}/nu$'\\xff' {where}/nu$'\\xfe'")
    sh.run(f"cd {where}/nu$'\\xff'")
    sh.run("true")
    sh.run("cd /")
    out = sh.run("rw back 1")
    assert "cannot cd" not in out and "Traceback" not in out, out
    assert hexed(sh, "pwd").endswith("6e75ff0a")  # nu\xff, not nu\xfe or U+FFFD
    sid = sh.session_id()
    assert steps_of(sid)[2]["cwd"] == f"{where}/nu\udcff"  # exact in JSON, as \udcff
    shown = rw("show", sid, "3").stdout
    assert f"{where}/nu\\xff" in shown and "\ufffd" not in shown, shown
    # Search's --cwd takes the directory as its bytes (argv), not nu\xfe's steps.
    hits = rw_json("search", "true", "--cwd", f"{where}/nu\udcff")
    assert [h["step"] for h in hits] == [3]
    assert rw("search", "true", "--cwd", f"{where}/nu\udcfe", check=False).returncode == 1
    # rw branch, from a failure there, goes back there too.
    sh.run("false")
    sh.run("cd /")
    out = sh.run("rw branch")
    assert "cannot cd" not in out and "Traceback" not in out, out
    if kind == "zsh":
        sh.p.send("\x15")  # (zsh put the failed command on the line: Ctrl-U)
    assert hexed(sh, "pwd").endswith("6e75ff0a")


# (zsh's line editor makes each byte that is not UTF-8 a `?` in the line it
# runs, so only bash can be typed such a command.)
def test_a_command_that_is_not_utf8_is_kept_exact_everywhere(daemon, shells, tmp_path):
    sh = bytes_shell(shells, "bash")
    sh.run("rw name bytes")
    sh.run(f"cd {tmp_path}")
    assert hexed(sh, RAW) == "696e76fffe0a"
    sid = sh.session_id()
    step = steps_of(sid)[2]
    assert step["command"] == RAW + " | od -An -tx1 | tr -d ' \\n'; echo"
    # Shown escaped, as environment values are (no raw byte reaches the terminal).
    assert "echo inv\\xff\\xfe | od" in rw("log", "bytes").stdout
    assert "echo inv\\xff\\xfe | od" in rw("show", "bytes", "3").stdout
    assert rw_json("show", "bytes", "3")["command"].startswith(RAW)
    # Search reads the text form, as shown.
    for pattern in ("inv\\xff\\xfe", "inv"):
        hits = rw_json("search", pattern, "--session", "bytes")
        assert [h["step"] for h in hits] == [3], pattern
    # Exports: the script holds the bytes (as $'...' escapes), Markdown and
    # JSON show them escaped.
    script = rw("export", "bytes", "--format", "sh", "--from", "3", "--to", "3").stdout
    assert "eval $'echo inv\\xff\\xfe | od" in script
    ran = subprocess.run(["bash", "-c", script], capture_output=True, cwd=tmp_path)
    assert ran.stdout == b"696e76fffe0a\n", ran
    md = rw("export", "bytes", "--format", "md").stdout
    assert "echo inv\\xff\\xfe | od" in md and "\ufffd" not in md
    exported = rw("export", "bytes", "--format", "json").stdout
    doc = json.loads(exported)
    assert doc["steps"][2]["command"] == step["command"]
    # ... which rw import json takes back, bytes and all.
    (tmp_path / "doc.json").write_text(exported)
    rw("import", "json", str(tmp_path / "doc.json"), "--name", "again")
    assert steps_of("again")[2]["command"] == step["command"]
    assert "eval $'echo inv\\xff\\xfe | od" in rw("export", "again", "--format", "sh").stdout
    # Replay runs the very bytes.
    replay = rw("replay", "bytes", "--from", "2", "--to", "3")
    assert "696e76fffe0a" in replay.stdout, replay.stdout


def test_diff_tells_commands_apart_by_the_bytes_that_are_not_utf8(daemon, shells):
    one = bytes_shell(shells, "bash")
    one.run("rw name first")
    one.run("echo \udcff")
    two = bytes_shell(shells, "bash")
    two.run("rw name second")
    two.run("echo \udcfe")
    out = rw("diff", "first", "second", check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out
    assert "echo \\xff" in out.stdout and "echo \\xfe" in out.stdout, out.stdout
