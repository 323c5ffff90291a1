"""The recorder's hot loop (recorder/relay.py and its C twin, _relay.c), on a
real pseudo-terminal: every byte the shell prints reaches the terminal once and
in order, a mark never does, and the loop gives the proxy its turn when typed
input, a signal, the shell's end or the terminal's comes."""

from __future__ import annotations

import errno
import os
import random
import select
import signal
import time
import tty

import pytest

from rewind_daemon.recorder import relay as relay_mod
from rewind_daemon.recorder.marks import PREFIX

from ..conftest import built


def _c_relay():
    return built("rewind_daemon.recorder._relay").relay


@pytest.fixture(params=["c", "python"])
def relay(request):
    return _c_relay() if request.param == "c" else relay_mod.relay_py


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    tty.setraw(slave)  # (no LF to CR LF: the bytes written are the bytes read)
    os.set_blocking(master, False)
    yield master, slave
    _close(master, slave)


@pytest.fixture
def terminal():
    """A pipe standing for the terminal: (read end, write end)."""
    r, w = os.pipe()
    yield r, w
    _close(r, w)


def _close(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass  # (closed by the test)


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    out = b""
    try:
        while chunk := os.read(fd, 1 << 16):
            out += chunk
    except BlockingIOError:
        pass
    return out


def _ready(fd: int) -> None:
    assert select.select([fd], [], [], 5)[0], "the pseudo-terminal never had output"


def _printed(relay, pty_pair, terminal, data: bytes, prefix: bytes = PREFIX):
    """What `relay` returns once the shell's side printed `data`."""
    master, slave = pty_pair
    os.write(slave, data)
    _ready(master)
    return relay(master, terminal[1], (), 1 << 16, prefix)


def test_plain_output_is_shown_once_and_returned_whole(relay, pty_pair, terminal):
    data = bytes(random.Random(1).randrange(256) for _ in range(3000)).replace(b"\x1b", b"E")
    assert _printed(relay, pty_pair, terminal, data) == (data, b"", False, False)
    assert _read_all(terminal[0]) == data


@pytest.mark.parametrize(
    "tail",
    [PREFIX + b"C;rw=t:S1:1\x07after", b"\x1b", b"\x1b]", b"\x1b]133", b"\x1b]133;"],
    ids=["a mark", "ESC", "ESC ]", "ESC ] 133", "the whole prefix"],
)
def test_a_read_that_holds_a_mark_or_its_start_is_not_shown(relay, pty_pair, terminal, tail):
    shown, held, ended, gone = _printed(relay, pty_pair, terminal, b"before " + tail)
    assert shown + held == b"before " + tail
    assert held.endswith(tail)
    assert _read_all(terminal[0]) == shown
    assert tail not in shown


def test_without_a_prefix_marks_go_through_as_bytes(relay, pty_pair, terminal):
    data = b"x" + PREFIX + b"C;rw=t:S1:1\x07y\x1b]13"
    assert _printed(relay, pty_pair, terminal, data, b"") == (data, b"", False, False)
    assert _read_all(terminal[0]) == data


def test_colours_titles_and_screen_switches_are_shown_as_they_come(relay, pty_pair, terminal):
    data = b"\x1b[31mred\x1b[0m \x1b]0;title\x07 \x1b]1337;x\x07 \x1b[?1049h ok \x1b]13x"
    assert _printed(relay, pty_pair, terminal, data) == (data, b"", False, False)
    assert _read_all(terminal[0]) == data


def test_the_users_own_osc_133_is_held_for_the_splitter_to_judge(relay, pty_pair, terminal):
    data = b"x \x1b]133;A\x07 y"
    assert _printed(relay, pty_pair, terminal, data) == (b"", data, False, False)
    assert _read_all(terminal[0]) == b""


def test_it_stops_at_the_limit_and_leaves_the_rest_in_the_terminal(relay, pty_pair, terminal):
    master, slave = pty_pair
    os.write(slave, b"a" * 3000)
    _ready(master)
    shown, held, ended, gone = relay(master, terminal[1], (), 1000, PREFIX)
    assert len(shown) == 1000 and held == b"" and not ended and not gone
    rest, _, _, _ = relay(master, terminal[1], (), 1 << 16, PREFIX)
    assert len(shown + rest) == 3000
    assert _read_all(terminal[0]) == b"a" * 3000


def _fill(slave: int) -> int:
    """Write to the slave until it takes no more; how much it took (a few reads)."""
    os.set_blocking(slave, False)
    n = 0
    try:
        while True:
            n += os.write(slave, b"b" * 1000)
    except BlockingIOError:
        return n


def test_a_watched_descriptor_gives_the_proxy_its_turn_after_one_read(relay, pty_pair, terminal):
    master, slave = pty_pair
    wake_r, wake_w = os.pipe()
    try:
        full = _fill(slave)
        _ready(master)
        os.write(wake_w, b"\0")  # (typed input or a signal, waiting)
        shown, _, _, _ = relay(master, terminal[1], (wake_r,), 1 << 20, PREFIX)
        assert 0 < len(shown) < full
        assert select.select([master], [], [], 0)[0]  # the rest waits
        assert os.read(wake_r, 1) == b"\0"  # left for the proxy
        rest, _, _, _ = relay(master, terminal[1], (wake_r,), 1 << 20, PREFIX)
        assert len(shown) + len(rest) == full  # nothing watched: on to the end
        assert _read_all(terminal[0]) == b"b" * full
    finally:
        os.close(wake_r)
        os.close(wake_w)


def test_the_shells_end_is_said_after_its_last_bytes(relay, pty_pair, terminal):
    master, slave = pty_pair
    os.write(slave, b"last words")
    os.close(slave)
    _ready(master)
    shown, held, ended, gone = relay(master, terminal[1], (), 1 << 16, PREFIX)
    if not ended:  # (the last bytes and the end may come in two reads)
        more = relay(master, terminal[1], (), 1 << 16, PREFIX)
        shown, ended = shown + more[0], more[2]
    assert shown == b"last words" and ended and not gone


def test_a_terminal_gone_is_said_not_raised(relay, pty_pair, terminal):
    master, slave = pty_pair
    old = signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # (as in Python, and in rw)
    try:
        os.close(terminal[0])
        os.write(slave, b"to no one")
        _ready(master)
        shown, held, ended, gone = relay(master, terminal[1], (), 1 << 16, PREFIX)
    finally:
        signal.signal(signal.SIGPIPE, old)
    assert (shown, held, ended, gone) == (b"to no one", b"", False, True)


def test_a_terminal_slower_than_the_shell_loses_nothing(relay, pty_pair, terminal):
    """A non-blocking terminal that fills up is waited for, never skipped."""
    master, slave = pty_pair
    r, w = terminal
    os.set_blocking(w, False)
    data = bytes(random.Random(2).choices(b"abcdefgh\n", k=300_000))
    got = bytearray()
    sent = 0
    pid = os.fork()
    if pid == 0:  # the terminal's reader, slow at first
        try:
            os.close(w)
            time.sleep(0.3)
            while os.read(r, 4096):
                pass
        finally:
            os._exit(0)
    os.close(r)
    try:
        while len(got) < len(data):
            if sent < len(data):
                try:
                    sent += os.write(slave, data[sent : sent + 4096])
                except BlockingIOError:
                    pass
            if select.select([master], [], [], 0.01)[0]:
                shown, held, ended, gone = relay(master, w, (), 1 << 16, PREFIX)
                assert not held and not ended and not gone
                got += shown
        assert bytes(got) == data
    finally:
        os.close(w)
        os.waitpid(pid, 0)


def test_c_and_python_show_and_hold_the_same_stream(pty_pair):
    """Random output with marks and cut marks: both give every byte once, in
    order, and never show a mark or its start."""
    c = _c_relay()
    rng = random.Random(3)
    pieces = [
        b"plain text\n", b"\x1b[1mbold\x1b[0m", PREFIX + b"D;0;rw=t:S1:2\x07",
        b"\x1b", b"]133;", b"\x1b]13", b"\xff\xfe",
    ]  # fmt: skip
    stream = b"".join(rng.choice(pieces) for _ in range(4000))
    for impl in (c, relay_mod.relay_py):
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        r, w = os.pipe()
        try:
            got = bytearray()
            for i in range(0, len(stream), 777):
                os.write(slave, stream[i : i + 777])
                while len(got) < min(i + 777, len(stream)):
                    _ready(master)
                    shown, held, ended, gone = impl(master, w, (), 1 << 16, PREFIX)
                    assert not ended and not gone
                    assert not relay_mod.may_mark(shown, PREFIX)
                    got += shown + held
                    assert _read_all(r) == shown
            assert bytes(got) == stream, impl
        finally:
            for fd in (master, slave, r, w):
                os.close(fd)


def test_may_mark_in_python_agrees_with_c_on_every_cut(pty_pair, terminal):
    c = _c_relay()
    master, slave = pty_pair
    mark = PREFIX + b"C;rw=t:S1:1\x07"
    for n in range(len(mark) + 1):
        for lead in (b"", b"x", b"\x1b[0m"):
            data = lead + mark[:n]
            if not data:
                continue
            os.write(slave, data)
            _ready(master)
            shown, held, _, _ = c(master, terminal[1], (), 1 << 16, PREFIX)
            assert bool(held) == relay_mod.may_mark(data, PREFIX), data
            _read_all(terminal[0])


def test_bad_arguments_are_errors_not_crashes(pty_pair, terminal):
    c = _c_relay()
    master, _ = pty_pair
    for impl in (c, relay_mod.relay_py):
        with pytest.raises(ValueError):
            impl(master, terminal[1], (), 0, PREFIX)
    with pytest.raises((ValueError, OverflowError)):
        c(master, terminal[1], (-1,), 10, PREFIX)
    with pytest.raises(TypeError):
        c(master, terminal[1], None, 10, PREFIX)
    with pytest.raises(OSError) as e:
        c(999, terminal[1], (), 10, b"")
    assert e.value.errno == errno.EBADF
