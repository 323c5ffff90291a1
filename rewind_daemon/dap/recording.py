"""Each debug run recorded as a session (origin "dap"), so `rw log`, `rw show`
and `rw diff` see what the debugging ran and changed. Steps are recorded as
they run, in the order they ran: a step run again after going back is a new
step, as a command typed again is in a shell."""

from __future__ import annotations

import getpass
import os
import socket
import time

from ..capture.outputs import make_output
from ..config import Config
from ..paths import new_session_id
from ..store import Store, env_blob
from ..timeline.executor import StepResult


class Recording:
    def __init__(
        self, store: Store, config: Config, program: str, shell: str, cwd: str,
        parent: str | None = None, name: str | None = None,
    ):  # fmt: skip
        self.store = store
        self.redactor = config.redactor()
        self.cap = config.max_step_output
        self.id = new_session_id()
        self.number = 0
        self.command = ""
        self.ended: tuple[int, str, StepResult, float] | None = None
        self.last_env: dict[str, str] | None = None  # the last environment stored
        self.env_id: int | None = None
        self.name = name = name or f"dap-{os.path.basename(program)}"
        with store.transaction():
            store.upsert_session(
                self.id, parent_id=parent, shell=shell, shell_version="", pid=os.getpid(),
                tty=None, started_at=time.time(), cwd=cwd, host=socket.gethostname(),
                user=getpass.getuser(), origin="dap", name=name,
            )  # fmt: skip

    def begin(self, command: str, cwd: str) -> None:
        self.number += 1
        self.command = self.redactor.text(command)[0]
        with self.store.transaction():  # one commit: the last step's end, this one's start
            self._write_end()
            self.store.begin_step(self.id, self.number, self.number, self.command, cwd, time.time())

    def end(self, res: StepResult) -> None:
        """The step's end, kept until flush(): the debugger tells the stop first."""
        self.ended = (self.number, self.command, res, time.time())

    def flush(self) -> None:
        if self.ended is not None:
            with self.store.transaction():
                self._write_end()

    def _write_end(self) -> None:
        if self.ended is None:
            return
        number, command, res, ended_at = self.ended
        self.ended = None
        if res.env and res.env != self.last_env:
            env = self.redactor.env(res.env)[0]
            self.last_env, self.env_id = res.env, self.store.add_env(*env_blob(env))
        env_id = self.env_id if res.env else None
        code = res.exit_code
        if code is None and res.pipestatus.lstrip("-").isdigit():
            code = int(res.pipestatus)  # the shell exited with it
        self.store.end_step(self.id, number, ended_at=ended_at, exit_code=code,
                            pipestatus=res.pipestatus, cwd=res.cwd, env_id=env_id)  # fmt: skip
        out, _ = make_output(res.output, command, self.redactor, cap=self.cap)
        self.store.set_output(self.id, number, out)

    def close(self) -> None:
        self.flush()
        with self.store.transaction():
            self.store.end_session(self.id, time.time())
