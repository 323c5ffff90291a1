"""Which recorded steps are rw's own commands (`rw log`, `rw back 2`, ...).

Decided from the command text when it is asked, so sessions recorded before
this existed are read the same way. A step is rw's own when the first simple
command of its line runs rw: `rw`, `\\rw`, `'rw'`, `command rw`, a path
ending in `/rw`, after `NAME=value` assignments, `env`, `sudo`, `exec`,
`time` or `noglob`. `rw back N` and `rw branch` count past these steps,
`rw log` marks them, and replay never runs them again.
"""

from __future__ import annotations

import re
import shlex

# Words that run the next word as the program.
_WRAPPERS = frozenset({"command", "exec", "time", "noglob", "nocorrect", "env", "sudo"})
# Options of those wrappers that take the next word as their argument.
_WITH_ARGUMENT = frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-S", "-P"})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\[[^]]*\])?\+?=")
_OPERATOR = frozenset(";&|()<>")
# `rw` as a word of its own, or the end of a path: only such lines are split.
_RW_WORD = re.compile(r"""(?<![^\s/'"\\(;&|])rw(?![^\s'";&|)])""")
# Verbs whose run changed the shell that typed them (through the rw function).
SHELL_CHANGING = frozenset({"back", "branch", "rewind"})


def _first_words(command: str, limit: int = 24) -> list[str]:
    """The words of the first simple command of `command` (at most `limit`)."""
    lex = shlex.shlex(command.replace("\n", ";"), posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    words: list[str] = []
    try:
        for word in lex:
            if word and set(word) <= _OPERATOR:
                if not words and word == "(":
                    continue  # a subshell: its first command
                break
            words.append(word)
            if len(words) >= limit:
                break
    except ValueError:  # an unclosed quote: what was read so far
        pass
    return words


def rw_verb(command: str) -> str | None:
    """The verb of the rw command `command` runs ("" for a bare `rw` or
    `rw --help`), or None when its first simple command is not rw."""
    if "rw" not in command or not _RW_WORD.search(command):
        return None  # most lines: no need to split them
    words = _first_words(command)
    i = 0
    while i < len(words):
        word = words[i]
        if _ASSIGNMENT.match(word):
            i += 1
        elif word in _WRAPPERS:
            i += 1
            while i < len(words) and words[i].startswith("-"):
                i += 2 if words[i] in _WITH_ARGUMENT else 1
        else:
            break
    if i >= len(words) or not (words[i] == "rw" or words[i].endswith("/rw")):
        return None
    return next((w for w in words[i + 1 :] if not w.startswith("-")), "")


def is_rw_command(command: str) -> bool:
    return rw_verb(command) is not None
