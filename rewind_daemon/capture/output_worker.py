"""Making outputs ready to store on the machine's second core.

The text, the redaction and the compression of a step's output (`OutputJob`,
made ready by `ready`) are the daemon's work per MB. When one read of the
output spools makes several steps ready at once (a build's backlog, a daemon
started after a reboot), `OutputWorker.run` hands them to one worker process
while the daemon makes the others itself, each taking the next. The worker is
a fresh interpreter (`python -m rewind_daemon.capture.output_worker`, started
by exec, its descriptors closed): nothing of the daemon's (its socket,
inotify, the store) is open in it. It gets the config's redaction rules once
and, with each step, the values its session's secrets had (KnownSecrets): it
masks what the daemon would. It answers with the row's blobs (store.py's
`output_blobs`), in a plain frame the daemon checks (never unpickled).

What the worker does is never needed: a worker that dies, hangs (no answer
within HANG_SECONDS and four times what the daemon would take) or answers
garbage is killed, said once in the log, and its steps are made by the
daemon; a worker is not started again for RETRY_SECONDS. At most two steps
are in the worker (one made, the next read meanwhile), so memory stays
bounded. A read that makes one step ready, or less than PARALLEL_BYTES, is
made in the daemon alone: an interactive shell's steps cost no process and
no wait. An idle worker is ended (`idle`), and so
is one still there when the daemon stops (`close`).
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import select
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Tuple, Union

from ..redact import Redactor
from ..store import OutputBlobs
from .known_secrets import KnownSecrets
from .logonce import LogOnce
from .outputs import OutputJob, ready
from .worker_spawn import FRAME_LEN as _LEN
from .worker_spawn import START_BYTES, write_frame

if TYPE_CHECKING:
    import subprocess  # (the daemon's side alone: not imported by the worker)

log = logging.getLogger("rw.ingest")

PARALLEL_BYTES = 1 << 20  # of steps ready at once, the least worth a second core
HANG_SECONDS = 2.0  # and four times the daemon's own time: a worker's answer waited for
RETRY_SECONDS = 60.0  # after a worker failed, made in the daemon alone so long
IDLE_SECONDS = 30.0  # a worker unused so long is ended
SWITCH_SECONDS = 0.0005
IN_WORKER = 2  # jobs given to the worker at once: one made, the next read
_HEAD = struct.Struct("<QIBQqq")  # job, masked, flags, len raw, len text, len timing
_TEXT_NONE, _TIMING_NONE, _FAILED = 1, 2, 4
READY = b"R"
TAKE_BACK = b"T"  # a frame: the daemon makes job N itself (a job's frame is a pickle: 0x80)
READY_SECONDS = 10.0  # a worker not started by then is given up
MAX_FRAME = 1 << 30
Made = Union[Tuple[OutputBlobs, int], Exception]  # (what OutputReader makes of a job)
_NOT_MADE = RuntimeError("not made")


def _read_exact(fh: IO[bytes], n: int) -> bytes | None:
    buf = fh.read(n)
    return buf if buf is not None and len(buf) == n else None


def _read_frame(fh: IO[bytes]) -> bytes | None:
    head = _read_exact(fh, _LEN.size)
    if head is None:
        return None
    (n,) = _LEN.unpack(head)
    return None if n > MAX_FRAME else _read_exact(fh, n)


def _answer(ident: int, blobs: OutputBlobs | None, n: int) -> list[bytes]:
    if blobs is None:
        return [_HEAD.pack(ident, 0, _FAILED, 0, 0, 0)]
    flags = (_TEXT_NONE if blobs.text is None else 0) | (
        _TIMING_NONE if blobs.timing is None else 0
    )
    text, timing = blobs.text or b"", blobs.timing or b""
    head = _HEAD.pack(ident, n, flags, len(blobs.raw), len(text), len(timing))
    return [head, blobs.raw, text, timing]


def _read_answer(fh: IO[bytes], job: OutputJob, ident: int) -> tuple[OutputBlobs, int] | None:
    """The worker's answer for job `ident`: None when it failed the job."""
    head = _read_exact(fh, _HEAD.size)
    if head is None:
        raise EOFError("the worker ended")
    got, n, flags, raw_n, text_n, timing_n = _HEAD.unpack(head)
    if got != ident or min(raw_n, text_n, timing_n) < 0 or raw_n + text_n + timing_n > MAX_FRAME:
        raise ValueError("the worker answered out of turn")
    if flags & _FAILED:
        return None
    blobs = [_read_exact(fh, k) if k else b"" for k in (raw_n, text_n, timing_n)]
    if any(b is None for b in blobs):
        raise EOFError("the worker ended")
    raw, text, timing = blobs
    return (
        OutputBlobs(
            raw or b"", None if flags & _TEXT_NONE else text, job.size, job.omitted,
            job.complete, None if flags & _TIMING_NONE else timing,
        ),
        n,
    )  # fmt: skip


def worker_main() -> int:
    """The worker: the redaction rules first, then jobs, each answered in turn.
    The next job is read while one is made (a thread: the daemon can hand it
    over at once)."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    setup = _read_frame(stdin)
    if setup is None:
        return 0
    extra, env_names = pickle.loads(setup)
    base = Redactor(extra, env_names)
    stdout.write(READY)  # (started: the daemon hands it steps from now on)
    stdout.flush()
    frames: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    taken_back: set[int] = set()  # jobs the daemon made itself: not to be begun

    def read_ahead() -> None:
        while True:
            frame = _read_frame(stdin)
            if frame is not None and frame[:1] == TAKE_BACK:
                taken_back.add(_LEN.unpack(frame[1:])[0])
                continue
            frames.put(frame)
            if frame is None:
                return

    sys.setswitchinterval(SWITCH_SECONDS)
    threading.Thread(target=read_ahead, daemon=True).start()
    ident = 0
    while True:
        frame = frames.get()
        if frame is None:
            return 0
        ident += 1
        if ident in taken_back:
            stdout.write(_answer(ident, None, 0)[0])
            stdout.flush()
            continue
        job: OutputJob = pickle.loads(frame)
        known = KnownSecrets()
        if job.known:
            known.restore(job.sid, job.known)
        try:
            blobs, n = ready(job, known.redactor(job.sid, base))
        except Exception:  # noqa: BLE001 - the daemon makes it again, and says why
            blobs, n = None, 0
        for part in _answer(ident, blobs, n):
            stdout.write(part)
        stdout.flush()


class OutputWorker:
    """The daemon's side of one worker process (see the module's docstring).
    `recipe`: the config's redaction rules (config.redact_regexes() and
    config.redact_env_name_regexes()), from which its Redactor is made."""

    def __init__(self, recipe: tuple[Sequence, Sequence]):
        self.recipe = (list(recipe[0]), list(recipe[1]))
        self.proc: subprocess.Popen | None = None
        self.ready = False  # the worker said it has started
        self.started_at = 0.0
        self.jobs_sent = 0
        self.last_used = 0.0
        self.failed_at = float("-inf")
        self.alone = False  # (tests: the worker makes every step)
        self._log = LogOnce(log)
        self._writing = threading.Lock()  # (frames to the worker, from two threads)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def usable(self, jobs: Sequence[OutputJob]) -> bool:
        """Whether to share `jobs` with the worker: several, and a worker there."""
        return (
            self.proc is not None
            and len(jobs) >= 2
            and sum(j.weight for j in jobs) >= PARALLEL_BYTES
        )

    def prepare(self, backlog: int) -> None:
        """Start the worker when `backlog` bytes wait in a spool, at least
        START_BYTES: it starts (a fifth of a second) while the daemon makes the
        first steps itself."""
        if backlog < START_BYTES or time.monotonic() - self.failed_at < RETRY_SECONDS:
            return
        try:
            self._start()
        except OSError as e:
            self._fail(str(e))

    def run(
        self, jobs: Sequence[OutputJob], local: Callable[[OutputJob], Made],
        first: Callable[[], None] | None = None,
    ) -> list[Made]:  # fmt: skip
        """`local(job)` of each job, or what the worker made of it (OutputBlobs,
        masked), in the order of `jobs`: the daemon and the worker each take the
        next job in turn. `first`: the daemon's own work, done while the worker
        begins (what it raises is raised once the jobs are made)."""
        results: list[Made] = [_NOT_MADE] * len(jobs)
        done = [False] * len(jobs)
        # The largest first: the last taken are small, so neither waits long for the other.
        todo = deque(sorted(range(len(jobs)), key=lambda i: -jobs[i].weight))
        lock = threading.Lock()
        in_worker: list[int] = []  # the jobs the worker has
        stop = threading.Event()  # (the daemon made them all: none for a worker still starting)
        sent_as: dict[int, int] = {}  # job: its number in the worker
        helper = threading.Thread(
            target=self._feed, args=(jobs, todo, lock, results, done, in_worker, stop, sent_as),
            name="rw-output-worker", daemon=True,
        )  # fmt: skip
        # The helper takes the GIL a few times a job: each time the daemon's own
        # work (Python's re, the redaction's loops) would make it wait up to the
        # switch interval (5 ms), and the worker with it.
        interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_SECONDS)
        failed: BaseException | None = None
        try:
            helper.start()
            if first is not None:
                try:
                    first()
                except BaseException as e:  # noqa: BLE001 - raised below, the jobs made
                    failed = e
            spent, weight = 0.0, 0  # the daemon's own: how fast it makes them
            while not self.alone:
                with lock:
                    if not todo:
                        break
                    i = todo.popleft()
                t0 = time.monotonic()
                results[i] = local(jobs[i])
                done[i] = True
                spent, weight = spent + time.monotonic() - t0, weight + jobs[i].weight
            if not self.alone:
                stop.set()
                # The jobs waiting in the worker behind the one it makes: taken
                # back, and made here meanwhile.
                for i in self._take_back(lock, in_worker, sent_as):
                    results[i] = local(jobs[i])
                    done[i] = True
            # What the worker has is waited for: a few times as long as the
            # daemon would take to make it (a second a MB when it made none).
            with lock:
                left = [jobs[i].weight for i in in_worker] or [j.weight for j in jobs]
            per_byte = max(spent / weight, 1e-7) if weight else 1e-6
            helper.join(HANG_SECONDS + 4 * per_byte * sum(left))
            if helper.is_alive():
                self._fail("it did not answer in time")
                helper.join(HANG_SECONDS)  # (killed: its pipes fail at once)
        finally:
            sys.setswitchinterval(interval)
        for i, job in enumerate(jobs):
            if not done[i]:
                results[i] = local(job)
        self.last_used = time.monotonic()
        if failed is not None:
            raise failed
        return results

    def _feed(
        self, jobs: Sequence[OutputJob], todo: deque, lock: threading.Lock,
        results: list[Made], done: list[bool], in_worker: list[int], stop: threading.Event,
        sent_as: dict[int, int],
    ) -> None:  # fmt: skip
        """The helper thread: once the worker has started, keep two jobs in it
        (one made, the next read meanwhile) while some are left. Any trouble
        ends the worker (the daemon makes what is left)."""
        try:
            proc = self.proc
            if proc is None or not self._started(proc, stop):
                return
            assert proc.stdin is not None and proc.stdout is not None
            sent: deque[tuple[int, int]] = deque()  # (job, ident) not answered yet
            while True:
                while len(sent) < IN_WORKER:
                    with lock:
                        if not todo:
                            break
                        i = todo.popleft()
                        in_worker.append(i)
                        self.jobs_sent += 1
                        sent_as[i] = self.jobs_sent
                    sent.append((i, sent_as[i]))
                    frame = pickle.dumps(jobs[i], pickle.HIGHEST_PROTOCOL)
                    with self._writing:
                        write_frame(proc.stdin, frame)
                if not sent:
                    return
                i, ident = sent.popleft()
                answer = _read_answer(proc.stdout, jobs[i], ident)
                if answer is not None and not done[i]:
                    results[i] = answer
                    done[i] = True
                with lock:
                    in_worker.remove(i)
        except (OSError, EOFError, ValueError) as e:
            self._fail(str(e) or type(e).__name__)
        except Exception as e:  # noqa: BLE001 - the daemon makes the steps itself
            self._fail(repr(e))

    def _take_back(
        self, lock: threading.Lock, in_worker: list[int], sent_as: dict[int, int]
    ) -> list[int]:
        """Tell the worker to skip the jobs it has not begun (all it has but the
        first); those jobs."""
        with lock:
            back = in_worker[1:]
            numbers = [sent_as[i] for i in back]
        proc = self.proc
        # Never waiting for the worker: not while the helper writes to it, nor
        # into a pipe without room (a worker that hangs is found by the deadline).
        if not back or proc is None or proc.stdin is None:
            return []
        if not self._writing.acquire(blocking=False):
            return []
        try:
            fd = proc.stdin.fileno()
            if not select.select([], [fd], [], 0)[1]:
                return []
            # (a few bytes: a pipe with room, PIPE_BUF at least, takes them whole;
            # before or after the job's own frame, the worker hears them)
            os.write(fd, b"".join(_LEN.pack(9) + TAKE_BACK + _LEN.pack(n) for n in numbers))
        except (OSError, ValueError):
            return []  # (the helper finds the worker gone, and says so)
        finally:
            self._writing.release()
        return back

    def _started(self, proc: subprocess.Popen, stop: threading.Event) -> bool:
        """Wait for the worker to say it has started, while the daemon has steps
        to make (False: it made them all first)."""
        assert proc.stdout is not None
        while not self.ready:
            if stop.is_set():
                return False
            if time.monotonic() - self.started_at > READY_SECONDS:
                raise EOFError("it did not start")
            if select.select([proc.stdout], [], [], 0.01)[0]:
                if proc.stdout.read(1) != READY:
                    raise EOFError("it ended as it started")
                self.ready = True
        return True

    def _start(self) -> subprocess.Popen | None:
        if self.proc is not None and self.proc.poll() is None:
            return self.proc
        from .worker_spawn import spawn

        self._reap()
        self.adopt(spawn(self.recipe))
        return self.proc

    def adopt(self, proc: subprocess.Popen) -> None:
        """Take `proc` as the worker: one started by worker_spawn with this
        worker's recipe (`rw daemon run` starts it before the daemon is there)."""
        self._reap()
        self.proc, self.jobs_sent = proc, 0
        self.ready, self.started_at = False, time.monotonic()

    def _fail(self, why: str) -> None:
        self.failed_at = time.monotonic()
        self._log.warning(
            "worker", "the output worker failed (%s): the daemon makes the outputs itself", why
        )
        self._reap(kill=True)

    def _reap(self, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if kill:  # (first: the helper may be reading or writing its pipes)
            proc.kill()
        for pipe in (proc.stdin, proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        import subprocess

        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def idle(self) -> None:
        """End the worker when unused for IDLE_SECONDS (the daemon's maintenance)."""
        if self.proc is not None and time.monotonic() - self.last_used >= IDLE_SECONDS:
            self._reap()

    def close(self) -> None:
        self._reap()


if __name__ == "__main__":
    sys.exit(worker_main())
