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
    def __init__(self, store: Store, config: Config, program: str, shell: str, cwd: str):
        self.store = store
        self.redactor = config.redactor()
        self.cap = config.max_step_output
        self.id = new_session_id()
        self.number = 0
        self.command = ""
        self.name = name = f"dap-{os.path.basename(program)}"
        with store.transaction():
            store.upsert_session(
                self.id, parent_id=None, shell=shell, shell_version="", pid=os.getpid(),
                tty=None, started_at=time.time(), cwd=cwd, host=socket.gethostname(),
                user=getpass.getuser(), origin="dap", name=name,
            )  # fmt: skip

    def begin(self, command: str, cwd: str) -> None:
        self.number += 1
        self.command = self.redactor.text(command)[0]
        with self.store.transaction():
            self.store.begin_step(self.id, self.number, self.number, self.command, cwd, time.time())

    def end(self, res: StepResult) -> None:
        with self.store.transaction():
            env = self.redactor.env(res.env)[0] if res.env else None
            env_id = self.store.add_env(*env_blob(env)) if env else None
            code = res.exit_code
            if code is None and res.pipestatus.lstrip("-").isdigit():
                code = int(res.pipestatus)  # the shell exited with it
            self.store.end_step(self.id, self.number, ended_at=time.time(), exit_code=code,
                                pipestatus=res.pipestatus, cwd=res.cwd, env_id=env_id)  # fmt: skip
            out, _ = make_output(res.output, self.command, self.redactor, cap=self.cap)
            self.store.set_output(self.id, self.number, out)

    def close(self) -> None:
        with self.store.transaction():
            self.store.end_session(self.id, time.time())
