"""The executor's shell, driven directly: stdout and stderr apart, each step's
output split exactly, and a step interrupted without ending the shell."""

from __future__ import annotations

import os
import threading

import pytest

from rewind_daemon.timeline.executor import Executor

SHELLS = ["bash", "zsh"]


def streams(ex: Executor, command: str):
    got: list[tuple[str, bytes]] = []
    res = ex.run(command, lambda b: got.append(("out", b)), lambda b: got.append(("err", b)))
    out = b"".join(b for k, b in got if k == "out")
    err = b"".join(b for k, b in got if k == "err")
    return res, out, err


@pytest.mark.parametrize("shell", SHELLS)
def test_stdout_and_stderr_reach_their_own_sinks_split_by_step(shell, tmp_path):
    with Executor(str(tmp_path), dict(os.environ), shell) as ex:
        res, out, err = streams(ex, "echo out1; echo err1 >&2; ls /no-such-rw-dir; printf out2")
        assert out == b"out1\nout2"
        assert err.startswith(b"err1\n") and b"/no-such-rw-dir" in err
        assert res.exit_code == 0
        # replay's one stream: both, each in its own order
        assert len(res.output) == len(out) + len(err)
        assert res.output.index(b"out1") < res.output.index(b"out2")
        assert res.output.index(b"err1") < res.output.index(b"/no-such-rw-dir")
        # nothing of one step is told in the next: a step ending without a
        # newline on either stream, then one writing only to stderr
        res, out, err = streams(ex, "printf no-newline >&2")
        assert (out, err) == (b"", b"no-newline")
        for i in range(30):  # many steps: the markers never drift
            res, out, err = streams(ex, f"echo o{i}; echo e{i} >&2; (exit {i % 3})")
            assert (out, err, res.exit_code) == (f"o{i}\n".encode(), f"e{i}\n".encode(), i % 3)


@pytest.mark.parametrize("shell", SHELLS)
def test_without_an_error_sink_stderr_is_merged_into_the_one_sink(shell, tmp_path):
    with Executor(str(tmp_path), dict(os.environ), shell) as ex:
        got: list[bytes] = []
        res = ex.run("echo a; sleep 0.2; echo b >&2; sleep 0.2; echo c", got.append)
        assert b"".join(got) == res.output == b"a\nb\nc\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_a_step_that_sends_its_output_elsewhere_does_not_hide_the_next_end(shell, tmp_path):
    """`exec >log 2>&1`, as logging scripts do: the step's markers still come."""
    log = tmp_path / "log"
    with Executor(str(tmp_path), dict(os.environ), shell) as ex:
        done = threading.Event()
        results = []

        def steps():
            results.append(streams(ex, f"exec >{log} 2>&1; echo hidden; echo hidden-err >&2"))
            results.append(streams(ex, "echo more; echo more-err >&2; (exit 4)"))
            done.set()

        threading.Thread(target=steps, daemon=True).start()
        if not done.wait(20):
            ex.kill()
            pytest.fail("the executor waited for markers the step's redirection hid")
        (_, out1, err1), (res2, out2, err2) = results
        assert (out1, err1, out2, err2) == (b"", b"", b"", b"")
        assert res2.exit_code == 4
        assert log.read_text() == "hidden\nhidden-err\nmore\nmore-err\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_the_shell_ending_mid_step_keeps_both_streams(shell, tmp_path):
    with Executor(str(tmp_path), dict(os.environ), shell) as ex:
        res, out, err = streams(ex, "echo bye; echo bye-err >&2; exit 5")
        assert res.exit_code is None and res.pipestatus == "5"
        assert (out, err) == (b"bye\n", b"bye-err\n")


def _interrupt_later(ex: Executor, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, ex.interrupt_step)
    timer.start()
    return timer


@pytest.mark.parametrize(
    "loop",
    ["n=0; while :; do n=$((n+1)); done", "until false; do sleep 0.01; done",
     "for i in 1 2; do while :; do :; done; done; echo not-reached", "sleep 100; echo not-reached",
     "f() { while :; do :; done; }; f; echo not-reached"],
)  # fmt: skip
def test_interrupting_a_bash_step_ends_it_and_the_shell_keeps_its_state(loop, tmp_path):
    with Executor(str(tmp_path), dict(os.environ)) as ex:
        ex.run("set -e; cd /usr; export RW_X=1; g() { echo g-$RW_X; }")
        timer = _interrupt_later(ex, 0.5)
        res = ex.run(loop)
        timer.join()
        assert (res.exit_code, res.pipestatus, res.cwd) == (130, "130", "/usr")
        assert b"not-reached" not in res.output
        after = ex.run('g; echo "$-"')
        assert after.output.startswith(b"g-1\n") and b"e" in after.output.split(b"\n")[1]
        ex.interrupt_step()  # between steps: nothing happens
        assert ex.run("echo still").output == b"still\n"


def test_interrupting_a_zsh_step_ends_its_shell_with_130(tmp_path):
    with Executor(str(tmp_path), dict(os.environ), "zsh") as ex:
        ex.run("x=1")
        timer = _interrupt_later(ex, 0.5)
        res = ex.run("while :; do :; done")
        timer.join()
        assert (res.exit_code, res.pipestatus) == (None, "130")


def test_a_bash_step_naming_bash_source_sees_it_as_before(tmp_path):
    """Steps are sourced from a pipe (so that an interrupt can end them), but
    one that names $BASH_SOURCE must not see the pipe's path in it."""
    with Executor(str(tmp_path), dict(os.environ)) as ex:
        res = ex.run('echo "[${BASH_SOURCE[0]}]"; cd "$(dirname "${BASH_SOURCE[0]}")"')
        assert res.output == b"[]\n" and res.cwd == str(tmp_path)
