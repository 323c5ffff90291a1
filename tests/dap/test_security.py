"""The debugger against the threat model (docs/security.md): another user of
this machine at `rw dap --port`, and what a recorded environment or a hover
may make the shell run."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from rewind_daemon.dap.peer import Peer, is_local_address, peer

from ..cli.test_cli_export import import_document
from ..conftest import steps_of, wait_for
from ..timeline.test_import_env import STEP, hostile_env, pwned
from .test_protocol import CLIENT, Adapter, Server

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("useradd"),
    reason="needs root, setpriv and useradd",
)


@pytest.fixture
def other_user():
    """A second user, made for this test and removed after it, whatever happens
    (other_user: machine-wide tests take turns, tests/conftest.py)."""
    name = f"rwtdap{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)  # fmt: skip
    try:
        uid = int(subprocess.run(["id", "-u", name], check=True, capture_output=True,
                                 text=True).stdout)  # fmt: skip
        gid = int(subprocess.run(["id", "-g", name], check=True, capture_output=True,
                                 text=True).stdout)  # fmt: skip
        yield uid, gid
    finally:
        subprocess.run(["userdel", "-f", name], capture_output=True)


# Another user's client: initialize, launch a script of its own with BASH_ENV
# pointing at code of its own, configurationDone; then a reset (SO_LINGER 0)
# rather than a close, so that the kernel forgets its socket while what it sent
# can still be read.
RESETTING_CLIENT = r"""
import json, socket, struct, sys
port, script, bash_env = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def frame(seq, command, **args):
    body = json.dumps({"seq": seq, "type": "request", "command": command,
                       "arguments": args}).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body
s = socket.create_connection(("127.0.0.1", port), timeout=20)
s.sendall(frame(1, "initialize", adapterID="rw")
          + frame(2, "launch", program=script, env={"BASH_ENV": bash_env})
          + frame(3, "configurationDone"))
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
"""


@needs_root
def test_another_user_that_resets_its_connection_runs_nothing(rw_home, other_user):
    """The peer's uid must be known before a byte is read: a client of another
    uid that sends a launch and resets (its socket gone from the kernel's table)
    gets nothing run, and the adapter goes on serving its own user."""
    uid, gid = other_user
    signal.alarm(120)
    base = Path(tempfile.mkdtemp(prefix="rw-dap-peer-", dir="/tmp"))
    base.chmod(0o755)
    marker = base / "ran"
    script = base / "evil.sh"
    script.write_text(f"touch {marker}-script\n")
    bash_env = base / "env.sh"
    bash_env.write_text(f"touch {marker}-bash-env\n")
    for f in (script, bash_env):
        f.chmod(0o644)
    server = Server(dict(os.environ, RW_HOME=str(rw_home)))
    try:
        for _ in range(5):
            client = ["/usr/bin/python3", "-c", RESETTING_CLIENT, str(server.port),
                      str(script), str(bash_env)]  # fmt: skip
            other = subprocess.run(
                ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *client],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert other.returncode == 0, other
        time.sleep(3)  # a launched script would have run by now
        mine = subprocess.run(["/usr/bin/python3", "-c", CLIENT, str(server.port)],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        assert '"command": "initialize", "success": true' in mine.stdout, mine
        ran = sorted(p.name for p in base.iterdir() if p.name.startswith("ran"))
    finally:
        signal.alarm(0)
        server.close()
        shutil.rmtree(base, ignore_errors=True)
    assert ran == []
    assert server.proc.stderr is not None
    said = server.proc.stderr.read().decode()
    assert said.count("rw dap: refused a connection") == 5, said


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_a_peer_is_served_only_while_it_is_established_and_known(host):
    """The kernel's table, read strictly: a connected client is this uid's; one
    that closed (FIN_WAIT2: the kernel shows uid 0 for it) or reset before it was
    looked at is refused, never taken for a remote or a root peer."""
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_server((host, 0), family=family) as listener:
        port = listener.getsockname()[1]
        client = socket.create_connection((host, port))
        conn, _ = listener.accept()
        with conn:
            assert peer(conn) == Peer(os.getuid())
            client.close()  # a FIN: its socket lingers in FIN_WAIT2
            time.sleep(0.2)
            assert "no longer established" in (peer(conn).refused or "")
        client = socket.create_connection((host, port))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset: its socket is gone from the table
        time.sleep(0.2)
        conn, _ = listener.accept()
        with conn:
            who = peer(conn)
        assert who.uid is None and who.refused, who


@pytest.fixture
def dap(rw_home):
    """The real `rw dap` on pipes, under a hard limit on the whole test."""
    signal.alarm(90)
    a = Adapter(dict(os.environ, RW_HOME=str(rw_home)))
    yield a
    signal.alarm(0)
    a.close()


def _run_to_stop(adapter: Adapter, **launch) -> list[str]:
    """initialize, launch, configurationDone; the output said until the stop."""
    adapter.response(adapter.request("initialize", adapterID="rw"))
    r, events = adapter.response(adapter.request("launch", stopOnEntry=True, **launch))
    assert r["success"], r
    _, more = adapter.response(adapter.request("configurationDone"))
    events += more
    while not any(e.get("event") == "stopped" for e in events):
        events.append(adapter.read())
    return [e["body"]["output"] for e in events if e.get("event") == "output"]


def _run_to_end(adapter: Adapter) -> list[str]:
    _, events = adapter.response(adapter.request("continue", threadId=1))
    while not any(e.get("event") == "terminated" for e in events):
        events.append(adapter.read())
    return [e["body"]["output"] for e in events if e.get("event") == "output"]


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_a_dap_launch_of_an_imported_session_runs_only_its_steps(dap, tmp_path, kind):
    """Stopped on entry, nothing has run (old code: BASH_ENV ran as bash started);
    run to the end, only the step's commands ran, with the user's PATH and no
    LD_PRELOAD (old code: BASH_ENV in a child bash, ls from the file's PATH)."""
    env = hostile_env(tmp_path)
    ok = {"exit_code": 0, "cwd_before": str(tmp_path), "cwd_after": str(tmp_path), "env": env}
    sid = import_document(tmp_path / "doc.json", {"name": "hostile", "shell": kind},
                          [{"command": STEP, **ok}], env)  # fmt: skip
    said = _run_to_stop(dap, session=sid)
    time.sleep(0.5)
    assert pwned(tmp_path) == []
    out = "".join(_run_to_end(dap))
    assert pwned(tmp_path) == []
    assert "hello\n" in out and "kept=kept ld=none\n" in out, out
    assert [s for s in said if "was imported" in s], said


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_a_dap_launch_of_your_own_session_sources_bash_env_only_in_children(
    dap, daemon, shells, tmp_path, kind
):
    log = tmp_path / "log"
    (tmp_path / "env.sh").write_text(f"echo sourced >> {log}\n")
    sh = shells(kind, env={"BASH_ENV": f"{tmp_path}/env.sh"})  # as a profile exports it
    sh.run("rw name ownenv")
    sh.run(f"echo step >> {log}")
    sh.run(f"bash -c 'echo child >> {log}'")
    assert log.read_text() == "step\nsourced\nchild\n"
    log.unlink()
    wait_for(lambda: len(steps_of("ownenv")) == 3)  # all stored by the daemon
    said = _run_to_stop(dap, session="ownenv")
    assert not [s for s in said if "was imported" in s], said
    time.sleep(0.5)
    assert not log.exists()
    _run_to_end(dap)
    assert log.read_text() == "step\nsourced\nchild\n"


ATTACKS = [
    "$((touch {d}/pwn1) )",  # bash: arithmetic falls back to a command substitution
    "${{v:=${{d:-\\$}}(touch {d}/pwn2)}}${{v@P}}",  # a value made into a prompt, expanded
    "${{x:=a[${{d:-\\$}}(touch {d}/pwn3)]}}$((x))",  # a subscript evaluated by arithmetic
    "${{(e)v}}",  # zsh: the value of v evaluated
    "$((x))",  # x holds an array subscript with a command substitution in it
    "$(touch {d}/pwn4)",
    "`touch {d}/pwn5`",
    "${{A:-$(touch {d}/pwn6)}}",
]


def _stop_at(adapter: Adapter, script: Path, line: int, **launch: object) -> None:
    """`script` launched (stopped on entry), then run to a breakpoint at `line`."""
    adapter.response(adapter.request("initialize", adapterID="rw"))
    adapter.response(adapter.request("launch", program=str(script), stopOnEntry=True, **launch))
    adapter.response(adapter.request("setBreakpoints", source={"path": str(script)},
                                     breakpoints=[{"line": line}]))  # fmt: skip
    for request, args in (("configurationDone", {}), ("continue", {"threadId": 1})):
        _, events = adapter.response(adapter.request(request, **args))
        while not any(e.get("event") == "stopped" for e in events):
            events.append(adapter.read())


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_hover_and_watch_never_run_a_command(dap, tmp_path, kind):
    """The reviewer's strings, on hover and in a watch: refused, said so, and no
    file made (old code: bash ran pwn1's and the commands v and x hold; zsh
    pwn1's and, through ${(e)v}, v's); what hovers are for still works."""
    d = tmp_path / "d"
    d.mkdir()
    script = tmp_path / "s.sh"
    lines = [
        f"v='$(touch {d}/pwn-e)'",
        f"x='a[$(touch {d}/pwn-x)]'",
        "A=2; S='a  b'; ARR=(x y z)",
        "echo end",
    ]
    script.write_text("\n".join(lines) + "\n")
    _stop_at(dap, script, 4, shell=kind)

    def evaluate(text: str, context: str) -> dict:
        r, _ = dap.response(dap.request("evaluate", expression=text, context=context, frameId=1))
        return r

    answers = [evaluate(a.format(d=d), c) for a in ATTACKS for c in ("hover", "watch")]
    assert sorted(p.name for p in d.iterdir()) == []
    for r in answers:
        assert not r["success"] and r["message"].startswith("not evaluated on hover: "), r
    first = "x" if kind == "zsh" else "y"
    for text, want in [("$A", "2"), ("${S}", "a  b"), ("${ARR[@]}", "x y z"),
                       ("${#ARR[@]}", "3"), ("${#S}", "4"), ("${ARR[1]}", first),
                       ("$((A * 21))", "42"), ("${NOPE-unset}", "unset"),
                       ("a; b & c | d", "a; b & c | d"), ("$A-$S.", "2-a  b.")]:  # fmt: skip
        r = evaluate(text, "hover")
        assert r["success"] and r["body"]["result"] == want, (text, r)
    r = evaluate(f"touch {d}/from-the-console && echo made", "repl")
    assert r["body"]["result"] == "made" and (d / "from-the-console").exists()


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_hover_reads_the_scripts_arguments_and_last_status_without_running_them(
    dap, tmp_path, kind
):
    """$1, ${10}, $#, $@, $? and the like on hover (old code: refused): read
    from the paused shell as its variables are, an argument holding a command
    substitution shown as it is, never run; $? is the status the script's next
    command sees, not that of rw's own commands in the shell."""
    d = tmp_path / "d"
    d.mkdir()
    script = tmp_path / "s.sh"
    script.write_text("false\necho end\n")
    args = ["one", "two  words", f"$(touch {d}/pwn-arg)", *"45678", "9", "ten"]
    _stop_at(dap, script, 2, shell=kind, args=args)

    def hover(text: str) -> dict:
        r, _ = dap.response(dap.request("evaluate", expression=text, context="hover", frameId=1))
        return r

    for text, want in [
        ("$1", "one"), ("${2}", "two  words"), ("$3", f"$(touch {d}/pwn-arg)"),
        ("${10}", "ten"), ("$10", "one0"), ("$#", "10"), ("${#1}", "3"), ("$?", "1"),
        ("${11:-none}", "none"), ("$(( $# * 2 + $? ))", "21"), ("$0", str(script)),
        ("$@", " ".join(args)), ("${#@}", "10"), ("[$1:$?]", "[one:1]"),
    ]:  # fmt: skip
        r = hover(text)
        assert r["success"] and r["body"]["result"] == want, (text, r)
    r = hover("$$")
    assert r["success"] and r["body"]["result"].isdigit(), r
    r = hover("${1[0]}")
    assert not r["success"] and r["message"].startswith("not evaluated on hover: "), r
    assert sorted(p.name for p in d.iterdir()) == []


def test_only_an_address_this_machine_cannot_bind_is_taken_for_another_machine():
    """A peer without an entry in the table is remote only when its address is
    not one of this machine's (the kernel refuses to bind it); else refused."""
    assert is_local_address(socket.AF_INET, "127.0.0.5")
    assert is_local_address(socket.AF_INET6, "::ffff:127.0.0.1")
    assert not is_local_address(socket.AF_INET, "192.0.2.1")  # TEST-NET-1
    here = socket.gethostbyname(socket.gethostname())
    assert is_local_address(socket.AF_INET, here)
