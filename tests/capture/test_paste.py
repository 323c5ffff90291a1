"""A runbook pasted into a real terminal (tmux, bracketed paste): one step per line."""

from __future__ import annotations

import json

import pytest

from ..conftest import BIN, rw, rw_json, steps_of, wait_for
from ..terminal import Terminal

SHELLS = ["bash", "zsh"]


@pytest.fixture(params=SHELLS)
def kind(request):
    return request.param


@pytest.fixture
def terminals(rw_home, tmp_path):
    opened: list[Terminal] = []

    def make(kind: str, rc: str = "") -> Terminal:
        t = Terminal(
            kind, rw_home=rw_home, home=tmp_path / "home", bin_dir=BIN,
            socket=tmp_path / f"tmux{len(opened)}.sock", rc=rc,
        )  # fmt: skip
        opened.append(t)
        return t

    yield make
    for t in opened:
        t.close()


def session_of(term: Terminal) -> str:
    for s in rw_json("sessions"):
        if s["pid"] == term.pid and s["shell"] == term.kind and not s["parent"]:
            return s["id"]
    raise AssertionError(f"no session for {term.kind} pid {term.pid}")


RUNBOOK = """\
cd {target}
export RW_PASTE=one
false
(exit 4)
true | false | true
# a comment line runs nothing
for i in 1 2; do
  echo n$i
done
cat <<'EOF'
here-doc
EOF
export RW_PASTE=two
echo pasted-end
"""


def test_a_pasted_runbook_is_one_step_per_line(daemon, terminals, kind, tmp_path):
    target = tmp_path / "deploy"
    target.mkdir()
    term = terminals(kind)
    term.paste(RUNBOOK.format(target=target))
    assert "pasted-end" in term.screen()
    sid = session_of(term)
    steps = steps_of(sid)
    cmds = [s["command"] for s in steps]
    assert len(steps) == 9, cmds
    assert cmds[:5] == [
        f"cd {target}", "export RW_PASTE=one", "false", "(exit 4)", "true | false | true"
    ]  # fmt: skip
    assert cmds[5].startswith("for i in 1 2") and "echo n$i" in cmds[5]
    assert cmds[6].startswith("cat <<'EOF'") and "here-doc" in cmds[6]
    assert cmds[7:] == ["export RW_PASTE=two", "echo pasted-end"]
    assert [s["exit_code"] for s in steps] == [0, 0, 1, 4, 0, 0, 0, 0, 0]
    assert steps[4]["pipestatus"] == [0, 1, 0]
    assert all(s["ended_at"] for s in steps)
    assert steps[0]["cwd_after"] == str(target)
    assert all(s["cwd"] == str(target) for s in steps[1:])
    assert rw_json("show", sid, "1")["env"].get("RW_PASTE") is None
    for n in (2, 3, 4, 5, 6, 7):
        assert rw_json("show", sid, str(n))["env"]["RW_PASTE"] == "one", n
    assert rw_json("show", sid, "8")["env"]["RW_PASTE"] == "two"
    # What `rw log --failed` lists is the failed lines of the block.
    failed = rw_json("log", sid, "--failed")
    assert [(s["step"], s["command"]) for s in failed] == [(3, "false"), (4, "(exit 4)")]
    # `rw branch` goes back to before the last failed line of the block.
    term.type("rw branch")
    term.clear_line()  # zsh puts the failed line on the command line to edit
    term.type(f'echo "$PWD $RW_PASTE" > {term.home}/branch.out')
    assert (term.home / "branch.out").read_text() == f"{target} one\n"
    branch = [s for s in rw_json("sessions") if s["parent"] == sid]
    assert len(branch) == 1 and branch[0]["branch_point"] == 3


def test_rw_back_inside_a_pasted_block(daemon, terminals, kind, tmp_path):
    term = terminals(kind)
    term.paste(
        'export RW_B=1\nexport RW_B=2\nexport RW_B=3\nrw back 2\necho "B=$RW_B" > back.out\nfalse\n'
    )
    assert (term.home / "back.out").read_text() == "B=1\n"
    sid = session_of(term)
    steps = steps_of(sid)
    assert [s["command"] for s in steps] == [
        "export RW_B=1", "export RW_B=2", "export RW_B=3", "rw back 2"
    ]  # fmt: skip
    assert all(s["exit_code"] == 0 for s in steps)
    # What followed it went into the branch, from the state it went back to.
    branch = [s for s in rw_json("sessions") if s["parent"] == sid]
    assert len(branch) == 1
    after = steps_of(branch[0]["id"])
    assert [s["command"] for s in after][-2:] == ['echo "B=$RW_B" > back.out', "false"]
    assert [s["exit_code"] for s in after][-2:] == [0, 1]


def test_rw_branch_inside_a_pasted_block(daemon, terminals, kind):
    term = terminals(kind)
    term.paste(
        f'export RW_X=1\nfalse\nexport RW_X=2\nrw branch\necho "X=$RW_X" > {term.home}/branch.out\n'
    )
    assert (term.home / "branch.out").read_text() == "X=1\n"
    sid = session_of(term)
    steps = steps_of(sid)
    assert [(s["command"], s["exit_code"]) for s in steps] == [
        ("export RW_X=1", 0), ("false", 1), ("export RW_X=2", 0), ("rw branch", 0)
    ]  # fmt: skip
    branch = [s for s in rw_json("sessions") if s["parent"] == sid]
    assert len(branch) == 1 and branch[0]["branch_point"] == 1
    assert [s["command"] for s in steps_of(branch[0]["id"])] == [
        "export RW_X=1", f'echo "X=$RW_X" > {term.home}/branch.out'
    ]  # fmt: skip


def test_typed_lines_after_a_paste_are_recorded_as_before(daemon, terminals, kind):
    term = terminals(kind)
    term.paste("echo one\n(exit 3)\n")
    term.type("(exit 5)")
    term.type("echo typed")
    # A paste after typed lines (zsh counts lines on from those).
    term.paste("echo two\nfalse\necho three\n")
    steps = steps_of(session_of(term))
    assert [(s["command"], s["exit_code"]) for s in steps] == [
        ("echo one", 0), ("(exit 3)", 3), ("(exit 5)", 5), ("echo typed", 0),
        ("echo two", 0), ("false", 1), ("echo three", 0),
    ]  # fmt: skip
    out = rw("log", session_of(term)).stdout
    assert "running" not in out


def test_status_pipestatus_and_last_argument_unchanged_inside_a_paste(daemon, terminals, kind):
    term = terminals(kind)
    pipestatus = "${PIPESTATUS[*]}" if kind == "bash" else "${pipestatus[*]}"
    term.paste(
        "false\n"
        'echo "status=$?" > seen.out\n'
        "true | false | true\n"
        f'echo "pipestatus={pipestatus}" >> seen.out\n'
        "echo first last-arg-value > /dev/null\n"
        'echo "last=$_" >> seen.out\n'
        "(exit 7)\n"
        'echo "status=$?" >> seen.out\n'
    )
    seen = (term.home / "seen.out").read_text().splitlines()
    assert seen == ["status=1", "pipestatus=0 1 0", "last=last-arg-value", "status=7"]
    assert len(steps_of(session_of(term))) == 8


@pytest.mark.parametrize("kind, histcontrol", [("bash", ""), ("bash", "ignoreboth"), ("zsh", "")])
def test_a_pasted_line_with_a_leading_space_is_kept_out(daemon, terminals, kind, histcontrol):
    """As typed: the line is not recorded, and what it exported is stored
    redacted in the environments of the steps after it."""
    term = terminals(kind, rc=f"HISTCONTROL={histcontrol}" if histcontrol else "")
    secret = "pasted-hunter2-value"
    term.paste(f"echo a\n export RW_HIDDEN={secret}\necho b\n(exit 3)\n")
    sid = session_of(term)
    steps = steps_of(sid)
    assert [(s["command"], s["exit_code"]) for s in steps] == [
        ("echo a", 0), ("echo b", 0), ("(exit 3)", 3)
    ]  # fmt: skip
    shown = rw("show", sid, "2", "--json").stdout
    assert json.loads(shown)["env"]["RW_HIDDEN"] == "<redacted>"
    assert secret not in shown and secret not in rw("log", sid, "--json").stdout


def test_pasted_function_definitions_are_steps(daemon, terminals, kind):
    term = terminals(kind)
    term.paste('greet() { echo "hi-$1"; }\ngreet x\nf2() {\n  echo multi\n}\nf2\necho last\n')
    assert "hi-x" in term.screen() and "multi" in term.screen()
    steps = steps_of(session_of(term))
    cmds = [s["command"] for s in steps]
    assert len(cmds) == 5, cmds
    assert cmds[0] == 'greet() { echo "hi-$1"; }'
    assert cmds[1] == "greet x"
    assert cmds[2].startswith("f2() {") and "echo multi" in cmds[2]
    assert cmds[3:] == ["f2", "echo last"]
    assert all(s["exit_code"] == 0 and s["ended_at"] for s in steps)


def test_blank_lines_and_continued_lines_in_a_paste(daemon, terminals, kind):
    term = terminals(kind)
    term.paste("echo a\n\n\necho b \\\n  c\n\nfalse\n  \necho d\n")
    steps = steps_of(session_of(term))
    cmds = [s["command"] for s in steps]
    assert len(cmds) == 4, cmds
    assert cmds[0] == "echo a" and cmds[2:] == ["false", "echo d"]
    # bash's history joins a continued line; zsh keeps the lines as pasted
    assert cmds[1] in ("echo b   c", "echo b \\\n  c")
    assert [s["exit_code"] for s in steps] == [0, 0, 1, 0]


def test_ctrl_c_inside_a_pasted_block(daemon, terminals, kind):
    term = terminals(kind)
    term.paste("echo one\nsleep 30\necho after\nfalse\n", wait=False)
    sid = None

    def sleeping():
        nonlocal sid
        sid = sid or next((s["id"] for s in rw_json("sessions") if s["pid"] == term.pid), None)
        return sid and len(steps_of(sid)) == 2

    wait_for(sleeping)
    term.interrupt()
    term.type("echo typed")
    steps = steps_of(sid)
    got = [(s["command"], s["exit_code"]) for s in steps]
    assert got[:2] == [("echo one", 0), ("sleep 30", 130)]
    # bash reads on and runs the rest of the block; zsh drops it
    rest = [("echo after", 0), ("false", 1)] if kind == "bash" else []
    assert got[2:] == [*rest, ("echo typed", 0)]
    assert all(s["ended_at"] for s in steps)
