"""The capture hooks in real bash and zsh under a PTY, evaluated as a user would."""

from __future__ import annotations

import pexpect
import pytest

from ..conftest import rw, rw_json, steps_of, wait_for, write_config

SHELLS = ["bash", "zsh"]


@pytest.fixture(params=SHELLS)
def kind(request):
    return request.param


def commands(steps):
    return [s["command"] for s in steps]


def test_ordinary_commands_failures_and_pipelines(daemon, shells, kind):
    sh = shells(kind)
    assert sh.run("echo hello") == "hello"
    sh.run("false")
    sh.run("true | false | true")
    sh.run("ls /nonexistent-rw-dir 2>/dev/null; echo done")
    steps = steps_of(sh.session_id())
    assert commands(steps) == [
        "echo hello",
        "false",
        "true | false | true",
        "ls /nonexistent-rw-dir 2>/dev/null; echo done",
    ]
    assert [s["step"] for s in steps] == [1, 2, 3, 4]
    assert [s["exit_code"] for s in steps] == [0, 1, 0, 0]
    assert steps[2]["pipestatus"] == [0, 1, 0]
    for s in steps:
        assert s["session"] == sh.session_id()
        assert s["duration_ms"] is not None and s["duration_ms"] >= 0
        assert s["started_at"] and s["ended_at"]


def test_cd_export_unset_are_recorded(daemon, shells, kind, tmp_path):
    sh = shells(kind)
    target = tmp_path / "there"
    target.mkdir()
    start = sh.run("pwd")
    sh.run(f"cd {target}")
    sh.run(
        "export RW_T_A='one two' RW_T_B=$'line1\\nline2\\t\"q\"' RW_T_C=$'it\\'s \\\\ é ✓ \\x01'"
    )
    sh.run("unset RW_T_A")
    sid = sh.session_id()
    steps = steps_of(sid)
    assert steps[1]["cwd"] == start and steps[1]["cwd_after"] == str(target)
    assert steps[2]["cwd"] == str(target)
    after_export = rw_json("show", sid, "3")
    assert after_export["env"]["RW_T_A"] == "one two"
    assert after_export["env"]["RW_T_B"] == 'line1\nline2\t"q"'
    assert after_export["env"]["RW_T_C"] == "it's \\ é ✓ \x01"
    after_unset = rw_json("show", sid, "4")
    assert "RW_T_A" not in after_unset["env"]
    assert after_unset["env_changes"] == {"RW_T_A": {"before": "one two", "after": None}}
    assert "RW_SESSION" not in after_unset["env"]


def test_multiline_and_compound_commands(daemon, shells, kind):
    sh = shells(kind)
    out = sh.run("for i in 1 2; do\necho n$i\ndone")
    assert out.split("\n")[-2:] == ["n1", "n2"]
    sh.run("echo a; echo b && false")
    sh.run("(cd /; false)")
    steps = steps_of(sh.session_id())
    assert len(steps) == 3
    # bash stores a multi-line line in history joined with "; " unless lithist is set
    assert steps[0]["command"] in (
        "for i in 1 2; do\necho n$i\ndone",
        "for i in 1 2; do echo n$i; done",
    )
    assert steps[1]["command"] == "echo a; echo b && false"
    assert steps[1]["exit_code"] == 1
    assert steps[2]["command"] == "(cd /; false)"
    assert steps[2]["exit_code"] == 1
    assert steps[2]["cwd_after"] == steps[2]["cwd"]


def test_leading_space_is_not_recorded(daemon, shells, kind):
    sh = shells(kind)
    sh.run("echo visible")
    sh.run(" echo hidden-secret")
    sh.run("echo visible")
    assert commands(steps_of(sh.session_id())) == ["echo visible", "echo visible"]


def test_bash_histcontrol_ignoreboth_keeps_repeats_and_drops_space(daemon, shells):
    sh = shells("bash", before_init=["HISTCONTROL=ignoreboth"])
    sh.run("echo again")
    sh.run("echo again")
    sh.run(" echo hidden")
    sh.run("echo again")
    sh.run("alias ll='echo LL'")
    sh.run("ll")
    sh.run("ll")
    assert commands(steps_of(sh.session_id())) == [
        "echo again", "echo again", "echo again", "alias ll='echo LL'", "ll", "ll",
    ]  # fmt: skip
    assert sh.run("echo $HISTCONTROL") == "ignoreboth"


def test_ctrl_c_is_recorded_with_its_status(daemon, shells, kind):
    sh = shells(kind)
    sh.interrupt_running("sleep 30")
    assert sh.run("echo after") == "after"
    steps = steps_of(sh.session_id())
    assert commands(steps) == ["sleep 30", "echo after"]
    assert steps[0]["exit_code"] == 130


def test_status_and_last_argument_unchanged_for_the_user(daemon, shells, kind):
    sh = shells(kind)
    sh.run("(exit 42)")
    assert sh.run("echo $?") == "42"
    sh.run("echo first last-arg-value")
    assert sh.run('echo "$_"') == "last-arg-value"
    sh.run("false | true")
    assert sh.run("echo $?") == "0"


def test_bash_pipestatus_unchanged_for_the_user(daemon, shells):
    sh = shells("bash")
    sh.run("true | false | true")
    assert sh.run('echo "${PIPESTATUS[*]}"') == "0 1 0"


def test_zsh_pipestatus_unchanged_for_the_user(daemon, shells):
    sh = shells("zsh")
    sh.run("true | false | true")
    assert sh.run('echo "${pipestatus[*]}"') == "0 1 0"


def test_init_twice_is_harmless(daemon, shells, kind):
    sh = shells(kind)
    sid = sh.session_id()
    assert sh.run(f'eval "$({sh.bin_dir}/rw init {kind})"') == ""
    sh.run("echo once")
    steps = steps_of(sid)
    assert commands(steps)[-1] == "echo once"
    assert commands(steps).count("echo once") == 1
    assert sh.session_id() == sid


def test_nested_shell_is_a_child_session(daemon, shells, kind, tmp_path):
    sh = shells(kind)
    outer = sh.session_id()
    sh.run("echo outer")
    # a nested interactive shell evaluating the same init, as ~/.bashrc would
    rc = tmp_path / "home" / f".rw_nested_{kind}"
    rc.write_text(f"PS1='<''rwp> '\neval \"$({sh.bin_dir}/rw init {kind})\"\n")
    if kind == "bash":
        sh.p.sendline(f"bash --rcfile {rc} -i")
    else:
        sh.p.sendline(f"ZDOTDIR={rc.parent} zsh -i")
        (rc.parent / ".zshrc").write_text(rc.read_text() + "unset zle_bracketed_paste\n")
    sh.p.expect_exact("<rwp> ")
    sh.run("echo inner")
    sh.run("exit")
    sh.run("echo outer-again")
    sessions = rw_json("sessions")
    inner = [s for s in sessions if s["parent"] == outer]
    assert len(inner) == 1
    assert commands(steps_of(inner[0]["id"])) == ["echo inner", "exit"]
    assert commands(steps_of(outer))[-1] == "echo outer-again"


def test_bash_user_prompt_command_scalar(daemon, shells):
    sh = shells("bash", before_init=["PROMPT_COMMAND='RW_PC=$((RW_PC+1))'", "RW_PC=0"])
    sh.run("false")
    assert sh.run("echo pc=$RW_PC status=$?") == "pc=3 status=1"
    assert commands(steps_of(sh.session_id())) == ["false", "echo pc=$RW_PC status=$?"]


def test_bash_user_prompt_command_array(daemon, shells):
    sh = shells(
        "bash",
        before_init=["RW_A=0 RW_B=0", "PROMPT_COMMAND=('RW_A=$((RW_A+1))' 'RW_B=$((RW_B+1))')"],
    )
    sh.run("true")
    assert sh.run("echo $RW_A $RW_B") == "3 3"
    assert sh.run('echo "${#PROMPT_COMMAND[@]}"') == "3"
    assert commands(steps_of(sh.session_id()))[0] == "true"


BASH_PREEXEC_STYLE = r"""
# A framework with bash-preexec's interface (bash-preexec itself is not in
# the package registries this project may use): a DEBUG trap that runs
# preexec_functions once per command line, and precmd_functions from
# PROMPT_COMMAND, with $? restored for each.
bash_preexec_imported=defined
preexec_functions=() precmd_functions=()
__bp_ready=
__bp_preexec_invoke_exec() {
  [[ -n $__bp_ready ]] || return 0
  [[ -n ${COMP_LINE-} ]] && return 0
  __bp_ready=
  local f; for f in "${preexec_functions[@]}"; do "$f" "$(HISTTIMEFORMAT= history 1)"; done
  return 0
}
__bp_precmd_invoke_cmd() {
  local s=$? f
  for f in "${precmd_functions[@]}"; do (exit $s); "$f"; done
}
__bp_interactive_mode() { __bp_ready=1; }
trap '__bp_preexec_invoke_exec "$_"' DEBUG
PROMPT_COMMAND=$'__bp_precmd_invoke_cmd\n__bp_interactive_mode'
"""


def test_bash_with_bash_preexec_loaded(daemon, shells, tmp_path):
    fw = tmp_path / "bp.sh"
    fw.write_text(BASH_PREEXEC_STYLE)
    sh = shells("bash", before_init=[f"source {fw}", "RW_SEEN=0", "preexec_functions+=(rw_mine)",
                                     "rw_mine() { RW_SEEN=$((RW_SEEN+1)); }"])  # fmt: skip
    sh.run("RW_SEEN=0")
    sh.run("echo one")
    sh.run("false")
    assert sh.run("echo seen=$RW_SEEN") == "seen=3"
    steps = steps_of(sh.session_id())
    assert commands(steps) == ["RW_SEEN=0", "echo one", "false", "echo seen=$RW_SEEN"]
    assert [s["exit_code"] for s in steps[:3]] == [0, 0, 1]
    assert sh.run("trap -p DEBUG") == "trap -- '__bp_preexec_invoke_exec \"$_\"' DEBUG"


def test_bash_existing_debug_trap_keeps_running(daemon, shells):
    sh = shells("bash", before_init=["RW_D=0", "trap 'RW_LAST=$?; RW_D=$((RW_D+1))' DEBUG"])
    before = int(sh.run("echo $RW_D"))
    sh.run("true")
    # It still runs after the init (once per simple command: true, echo and
    # the prompt's own), and finds $? as the user's last command left it.
    assert int(sh.run("echo $RW_D")) - before >= 3
    sh.run("false")
    assert sh.run("echo $RW_LAST") == "1"
    assert commands(steps_of(sh.session_id())) == [
        "echo $RW_D", "true", "echo $RW_D", "false", "echo $RW_LAST"
    ]  # fmt: skip


def test_secrets_are_redacted_and_ignore_patterns_drop(rw_home, shells, kind):
    write_config(rw_home, 'ignore = ["^rw-ignored"]\n')
    rw("daemon", "start")
    sh = shells(kind)
    sh.run("export GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789")
    sh.run("echo curl -H 'Authorization: Bearer s3cr3tvalue' https://user:pw@example.com")
    sh.run("rw-ignored-command 2>/dev/null; true")
    sh.run("echo mysql --password=hunter2")
    sid = sh.session_id()
    steps = steps_of(sid)
    text = "\n".join(commands(steps))
    assert "ghp_" not in text and "s3cr3tvalue" not in text and "hunter2" not in text
    assert ":pw@" not in text
    assert "rw-ignored" not in text
    assert len(steps) == 3
    env = rw_json("show", sid, "1")["env"]
    assert env["GITHUB_TOKEN"] == "<redacted>"
    import json

    doctor = {c["check"]: c for c in json.loads(rw("doctor", "--json", check=False).stdout)}
    # token (command and env), Authorization, URL password, --password
    assert int(doctor["redactions"]["detail"].split()[0]) >= 5


@pytest.mark.parametrize("histcontrol", ["", "ignorespace", "ignoreboth"])
def test_bash_function_definitions_do_not_swallow_the_next_line(daemon, shells, histcontrol):
    sh = shells("bash", before_init=[f"HISTCONTROL={histcontrol}"])
    lines = ["greet() { echo hello-$1; }", "echo after-def", "greet x > /dev/null",
             "f2() {\necho multi\n}", "echo after-multi", "echo last"]  # fmt: skip
    for line in lines:
        sh.run(line)
    cmds = [s["command"] for s in steps_of(sh.session_id())]
    assert len(cmds) == 6, cmds
    assert cmds[1:3] == ["echo after-def", "greet x > /dev/null"]
    assert cmds[4:] == ["echo after-multi", "echo last"]


def _session(sid):
    return next(s for s in rw_json("sessions") if s["id"] == sid)


def _ended(sid, steps: int):
    """Wait until the session is closed with its last step ended; its steps."""

    def done():
        found = steps_of(sid)
        closed = _session(sid)["ended_at"] is not None
        return found if closed and len(found) == steps and found[-1]["ended_at"] else None

    return wait_for(done, timeout=20)


@pytest.mark.parametrize("line, status", [("exit 3", 3), ("exit", 1)])
def test_the_last_exit_ends_as_a_step_with_its_status(daemon, shells, kind, line, status):
    sh = shells(kind)
    sh.run("echo hi")
    sh.run("false")
    sid = sh.session_id()
    sh.p.sendline(line)
    sh.p.expect(pexpect.EOF)
    steps = _ended(sid, 3)
    assert [s["command"] for s in steps] == ["echo hi", "false", line]
    assert steps[-1]["exit_code"] == status
    assert steps[-1]["pipestatus"] == [status]
    assert "running" not in rw("log", sid).stdout


def test_a_shell_closed_while_a_command_runs_ends_that_step(daemon, shells, kind):
    sh = shells(kind)
    sh.run("echo hi")
    sid = sh.session_id()
    sh.p.sendline("sleep 60")
    wait_for(lambda: len(steps_of(sid)) == 2)
    sh.close()  # the terminal goes away (SIGHUP)
    steps = _ended(sid, 2)
    assert steps[-1]["command"] == "sleep 60"
    assert steps[-1]["exit_code"] is None  # not known: it did not end by itself
    assert "running" not in rw("log", sid).stdout


def test_a_branch_exec_session_is_closed_when_its_shell_exits(daemon, shells, kind):
    sh = shells(kind)
    sh.run("rw name job")
    sh.run("export RW_A=one")
    sh.p.sendline("rw branch job 2 --exec")
    if kind == "zsh":
        sh.p.sendline("PS1='<''rwp> '; unset zle_bracketed_paste; unsetopt prompt_sp")
    else:
        sh.p.sendline("PS1='<''rwp> '")
    sh.p.expect_exact("<rwp> ")
    sh.run("echo in-the-branch")
    sh.run("exit 4")
    assert sh.run("echo back") == "back"
    branch = next(s for s in rw_json("sessions") if s["name"] == "job-branch-2")
    steps = _ended(branch["id"], 5)
    assert [s["command"] for s in steps][-2:] == ["echo in-the-branch", "exit 4"]
    assert steps[-1]["exit_code"] == 4
    assert (
        "(open)" not in [ln for ln in rw("sessions").stdout.splitlines() if "job-branch-2" in ln][0]
    )
