"""Every option and argument that takes a session resolves it one way: a name,
an id or id prefix, `current` or `last`; a reference to nothing is exit 2, and a
name several sessions share picks one and says which."""

from __future__ import annotations

import pytest

from ..conftest import make_site, rw, rw_json, steps_of

# Every command that takes a session, with the session in the place of `S`.
TAKES_A_SESSION = [
    ["log", "S"],
    ["show", "S", "1"],
    ["export", "S"],
    ["replay", "S"],
    ["breakpoint", "list", "S"],
    ["breakpoint", "add", "S", "--on-error"],
    ["breakpoint", "rm", "S", "1"],
    ["diff", "S", "last"],
    ["diff", "last", "S"],
    ["branch", "S", "1"],
    ["rewind", "S", "1", "--exec"],
    ["checkpoint", "list", "--session", "S"],
]


@pytest.fixture
def two_shells(daemon, shells, tmp_path):
    """Two recorded bash sessions, `web` (with step checkpoints of a watched tree)
    and the newer `api`."""
    rw("watch", "add", str(make_site(tmp_path)))
    web = shells("bash")
    web.run("rw name web")
    web.run("echo one")
    api = shells("bash")
    api.run("rw name api")
    return web.run("echo $RW_SESSION"), api.run("echo $RW_SESSION")


@pytest.mark.parametrize("args", TAKES_A_SESSION, ids=lambda a: " ".join(a))
def test_a_session_that_does_not_exist_is_exit_2(two_shells, args):
    proc = rw(*[("no-such" if a == "S" else a) for a in args], check=False)
    assert proc.returncode == 2, proc
    assert proc.stderr == "rw: no session named or numbered 'no-such'; see rw sessions\n"
    assert proc.stdout == ""


def test_checkpoint_list_takes_names_prefixes_current_and_last(two_shells, shells):
    web, api = two_shells
    by_id = rw_json("checkpoint", "list", "--session", web)
    assert by_id and {c["session"] for c in by_id} == {web}
    assert rw_json("checkpoint", "list", "--session", "web") == by_id
    assert rw_json("checkpoint", "list", "--session", web[:14]) == by_id
    last = rw_json("checkpoint", "list", "--session", "last")
    assert last and {c["session"] for c in last} == {api}
    assert "step 1 of " + web in rw("checkpoint", "list", "--session", "web").stdout
    # `current` is the calling shell's
    web_again = shells("bash")
    web_again.run("true")
    current = web_again.run("rw checkpoint list --session current --json")
    assert web_again.run("echo $RW_SESSION") in current
    assert web not in current


def test_a_shared_name_means_the_newest_recorded_session_and_says_so(two_shells, shells):
    web, _api = two_shells
    newer = shells("zsh")
    newer.run("rw name web")
    newer.run("echo from-zsh")
    newer_id = newer.run("echo $RW_SESSION")
    proc = rw("log", "web", "--json")
    assert {s["session"] for s in rw_json("log", "web")} == {newer_id}
    note = proc.stderr.splitlines()
    assert len(note) == 1, proc.stderr
    assert note[0].startswith(f"rw: 2 sessions are named 'web': using {newer_id} (shell, started ")
    assert note[0].endswith(f"give an id for another ({web}; see rw sessions)")
    # the id takes the other one, without a note
    proc = rw("log", web, "--json")
    assert proc.stderr == "" and "echo one" in proc.stdout
    # every command says it the same way
    for args in (
        ["show", "web", "1"],
        ["export", "web"],
        ["checkpoint", "list", "--session", "web"],
    ):
        assert f"using {newer_id}" in rw(*args).stderr, args
    # a name only one session has says nothing
    assert rw("log", "api").stderr == ""


def test_sessions_shows_where_each_came_from(two_shells, tmp_path):
    web, api = two_shells
    history = tmp_path / "hist"
    history.write_text("echo imported\n")
    imported = rw_json("import", "bash", str(history), "--name", "old")["session"]
    rw("branch", "web", "1", "--name", "web-fix")
    origins = {s["name"]: s["origin"] for s in rw_json("sessions")}
    assert origins == {"web": "shell", "api": "shell", "old": "import", "web-fix": "branch"}
    lines = {ln.split()[0]: ln.split() for ln in rw("sessions").stdout.splitlines()}
    assert lines[web][1:4] == ["web", "bash", "shell"]
    assert lines[imported][1:4] == ["old", "bash", "import"]
    branch = next(ln for ln in lines.values() if ln[1] == "web-fix")
    assert branch[2:4] == ["bash", "branch"]
    assert steps_of("web-fix")[0]["command"] == "rw name web"
