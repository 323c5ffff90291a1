"""Real bash and zsh run by the real `rw record` under a PTY."""

from __future__ import annotations

from pathlib import Path

import pexpect
import pytest

from ..conftest import BIN, RW
from ..shell import PROMPT, Shell

# A test rc file that prints rw's marks by hand, as the hooks will: C when a
# command line starts (bash: PS0; zsh: preexec), D and A at the prompt.
MARKS = {
    "bash": r"""
__t=${RW_RECORD%%:*} __n=0
PS0='\e]133;C;rw=${__t}:S1:$((__n+=1))\a'
__d() {
  local s=$?
  printf '\e]133;D;%s;rw=%s:S1:%s\a\e]133;A;rw=%s:S1:\a' "$s" "$__t" "$__n" "$__t"
  return $s
}
PROMPT_COMMAND=__d
""",
    "zsh": r"""
__t=${RW_RECORD%%:*} __n=0
preexec() { printf '\e]133;C;rw=%s:S1:%s\a' $__t $((++__n)); }
precmd() {
  local s=$?
  printf '\e]133;D;%s;rw=%s:S1:%s\a\e]133;A;rw=%s:S1:\a' $s $__t $__n $__t
}
""",
}
RC = {
    "bash": "PS1='<rwp> '\n",
    "zsh": "PS1='<rwp> '; unset zle_bracketed_paste; unsetopt prompt_sp\n",
}


class Recorded(Shell):
    """`rw record KIND` with a test rc file; `run`, `interrupt_running` as Shell."""

    def __init__(
        self, kind: str, *, rw_home: Path, home: Path, marks: bool, env: dict, rc: str,
        encoding: str | None = "utf-8",
    ):  # fmt: skip
        self.kind = kind
        self.bin_dir = BIN
        home.mkdir(parents=True, exist_ok=True)
        text = RC[kind] + (MARKS[kind] if marks else "") + rc
        self.env = {
            "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "RW_HOME": str(rw_home),
            "TERM": "dumb",
            "LANG": "C.UTF-8",
            **env,
        }
        if kind == "bash":
            (home / "rc.bash").write_text(text)
            args = ["--", "--rcfile", str(home / "rc.bash"), "-i"]
        else:
            (home / ".zshrc").write_text(text)
            self.env["ZDOTDIR"] = str(home)
            args = ["--", "-i"]
        self.p = pexpect.spawn(
            RW, ["record", kind, *args], env=self.env, encoding=encoding, timeout=20,
            cwd=str(home), dimensions=(40, 200),
        )  # fmt: skip
        self.p.delaybeforesend = None
        self.p.expect_exact(PROMPT if encoding else PROMPT.encode())

    def exit_status(self, line: str = "exit") -> int | None:
        """Type `line` (which ends the shell); rw record's exit status."""
        self.p.sendline(line)
        self.p.expect(pexpect.EOF)
        self.p.close()
        return self.p.exitstatus

    @property
    def spool(self) -> Path:
        return Path(self.env["RW_HOME"]) / "data" / "spool" / "S1.output"


@pytest.fixture
def recorded(rw_home, tmp_path):
    """Factory: recorded("zsh", marks=True, env={...}, rc="...")."""
    opened: list[Recorded] = []

    def make(kind="bash", marks=False, env=None, rc="", encoding="utf-8") -> Recorded:
        sh = Recorded(
            kind, rw_home=rw_home, home=tmp_path / "home", marks=marks, env=env or {}, rc=rc,
            encoding=encoding,
        )  # fmt: skip
        opened.append(sh)
        return sh

    yield make
    for sh in opened:
        sh.close()
