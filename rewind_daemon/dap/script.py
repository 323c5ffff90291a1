"""A shell script as the debugger's steps: each top-level command is one step
at its lines. Comments, blank lines and the shebang are not steps; compound
commands (if, case, loops, { }, ( )), function definitions, lines continued
with `\\` or ending in `|`, `&&` or `||`, and here-documents belong to the
command they are part of. Commands that share a line share a step (a
breakpoint is set on a line).

This is not a parser: it follows quotes, brackets, here-documents and the
reserved words that open and close compound commands, which is what deciding
where a top-level command ends needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import RwError

_OPENERS = {"if": "fi", "case": "esac", "for": "done", "while": "done",
            "until": "done", "select": "done", "{": "}", "repeat": "done"}  # fmt: skip
_CLOSERS = {"fi", "esac", "done", "}"}
# Words after which the next word is again in command position.
_LEADING = {"then", "do", "else", "elif", "if", "while", "until", "!", "time", "{", "function"}
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=\S*")
_WORD_END = set(" \t\n;&|()<>")
# A line that names a function whose body follows on the next line.
_FUNCTION_HEAD = re.compile(r"(?:\bfunction\s+\S+(?:\s*\(\s*\))?|[^\s;&|()<>]+\s*\(\s*\))\s*\Z")


@dataclass(frozen=True)
class Step:
    number: int  # 1, 2, ... in the script's order
    line: int  # its first line (1-based)
    end_line: int  # its last line
    command: str

    def covers(self, line: int) -> bool:
        return self.line <= line <= self.end_line


class ScriptError(RwError):
    """A script whose commands cannot be told apart."""


def split(text: str, shell: str = "bash") -> list[Step]:
    return _Splitter(text, shell == "zsh").steps()


class _Splitter:
    def __init__(self, text: str, zsh: bool = False):
        self.text = text
        # zsh: `}` closes a group without a `;` before it, and `{` may follow the
        # header of a short form (`if [[ c ]] {`, `repeat 3 {`)
        self.zsh = zsh
        self.i = 0
        self.line = 1

    def steps(self) -> list[Step]:
        found: list[Step] = []
        text = self.text
        while True:
            self._skip_blank()
            if self.i >= len(text):
                return found
            start, first = self.i, self.line
            self._command()
            body = text[start : self.i].rstrip("\n")
            found.append(Step(len(found) + 1, first, first + body.count("\n"), body))

    def _skip_blank(self) -> None:
        """Past blank lines, comments and stray separators between commands."""
        text = self.text
        while self.i < len(text):
            c = text[self.i]
            if c == "\n":
                self.line += 1
                self.i += 1
            elif c in " \t;":
                self.i += 1
            elif c == "#":
                self._to_line_end()
            else:
                return

    def _to_line_end(self) -> None:
        end = self.text.find("\n", self.i)
        self.i = len(self.text) if end < 0 else end

    def _error(self, first: int, what: str) -> ScriptError:
        return ScriptError(f"line {first}: {what}; rw cannot tell where this command ends")

    def _command(self) -> None:
        """Past one top-level command and the newline that ends it."""
        text = self.text
        first = self.line
        stack: list[str] = []  # closers awaited: fi, done, esac, }, )
        heredocs: list[tuple[str, bool]] = []  # (delimiter, strip tabs) awaiting bodies
        command_position = True
        joined = False  # the line ended in |, && or ||: the command goes on
        after_function = False
        while self.i < len(text):
            c = text[self.i]
            if c == "\n":
                line_text = text[text.rfind("\n", 0, self.i) + 1 : self.i]
                self.i += 1
                self.line += 1
                if heredocs:
                    self._heredoc_bodies(heredocs, first)
                    heredocs = []
                if not stack and not joined and not _FUNCTION_HEAD.search(line_text):
                    return
                command_position = True
                continue
            if c in " \t":
                self.i += 1
                continue
            if c == "\\":
                if text.startswith("\n", self.i + 1):
                    self.line += 1
                self.i += 2
                command_position = False
                continue
            if c == "#" and self._word_start():
                self._to_line_end()
                continue
            joined = False
            if c in "'\"`":
                self._quoted(first)
                command_position = False
                continue
            if c == "$" and text.startswith(("$(", "${", "$'", '$"'), self.i):
                self._dollar(first)
                command_position = False
                continue
            if c == "<" and text.startswith("<<", self.i) and not text.startswith("<<<", self.i):
                self.i += 2
                heredocs.append(self._heredoc_word(first))
                command_position = False
                continue
            if c in ";&|":
                op = text[self.i : self.i + 2]
                if op in ("&&", "||", ";;", ";&", "|&"):
                    self.i += 2
                else:
                    self.i += 1
                    op = c
                joined = op in ("&&", "||", "|", "|&")
                command_position = True
                continue
            if c == "(":
                stack.append(")")
                self.i += 1
                command_position = True
                continue
            if c == ")":
                if stack and stack[-1] == ")":
                    stack.pop()
                # else: a pattern of a case clause
                self.i += 1
                command_position = True
                continue
            if c in "<>":
                self.i += 1
                continue
            word = self._word()
            # in a case clause, `fi|done)` are patterns (`esac` is always the word)
            if stack and stack[-1] == "esac" != word and text.startswith((")", "|"), self.i):
                command_position = False
                continue
            closes = command_position or (self.zsh and word == "}")
            if closes and word in _CLOSERS and stack and stack[-1].rstrip("+") == word:
                stack.pop()
                # zsh's short forms (`if [[ c ]] { ... }`, `for x (a b) { ... }`, and
                # bash's `for x in a; { ... }`): a group that ends a compound
                # command whose then or do never came, unless one follows it now
                if word == "}" and stack and stack[-1] in ("done", "fi"):
                    after = self._peek_word()
                    if after not in ("then", "do") and after[:1] not in ("&", "|"):
                        stack.pop()
                command_position = True  # a reserved word may follow: `{ ...; } done`
                continue
            if command_position and stack and (word, stack[-1]) in (("do", "done"), ("then", "fi")):
                stack[-1] += "+"  # its body has begun: no short form
            short_form = self.zsh and word == "{" and bool(stack) and stack[-1] in ("done", "fi")
            if (command_position or short_form) and word in _OPENERS:
                stack.append(_OPENERS[word])
            # after `function NAME` comes the body, a command of its own
            command_position = (
                word in _LEADING
                or after_function
                or (command_position and bool(_ASSIGNMENT.fullmatch(word)))
            ) and word != "function"
            after_function = word == "function"
        if stack or heredocs:
            awaited = (
                f"here-document {heredocs[0][0]!r}" if heredocs else f"`{stack[-1].rstrip('+')}`"
            )
            raise self._error(first, f"the script ends before the {awaited} that closes it")

    def _peek_word(self) -> str:
        """The next word or `&`/`|` operator past blanks, `;`, newlines and
        comments (nothing consumed)."""
        i, line = self.i, self.line
        while self.i < len(self.text) and self.text[self.i] in " \t":
            self.i += 1
        if self.text.startswith(("&", "|"), self.i):
            word = self.text[self.i : self.i + 2]
            self.i, self.line = i, line
            return word
        self._skip_blank()
        start = self.i
        while self.i < len(self.text) and self.text[self.i] not in _WORD_END:
            self.i += 1
        word = self.text[start : self.i]
        self.i, self.line = i, line
        return word

    def _word_start(self) -> bool:
        return self.i == 0 or self.text[self.i - 1] in " \t\n;&|()"

    def _word(self) -> str:
        """A plain word (quotes inside it are passed over as part of it)."""
        text, start = self.text, self.i
        while self.i < len(text) and text[self.i] not in _WORD_END:
            c = text[self.i]
            if c == "\\":
                if text.startswith("\n", self.i + 1):
                    self.line += 1
                self.i += 2
            elif c in "'\"`":
                self._quoted(self.line)
            elif c == "$" and text.startswith(("$(", "${", "$'", '$"'), self.i):
                self._dollar(self.line)
            else:
                self.i += 1
        if self.i == start:  # a character no rule takes: move on
            self.i += 1
        return text[start : self.i]

    def _quoted(self, first: int) -> None:
        """Past a '...', "..." or `...` string."""
        text = self.text
        q = text[self.i]
        self.i += 1
        while self.i < len(text):
            c = text[self.i]
            if c == q:
                self.i += 1
                return
            if c == "\n":
                self.line += 1
            if c == "\\" and q != "'":
                if text.startswith("\n", self.i + 1):
                    self.line += 1
                self.i += 2
                continue
            if q == '"' and c == "$" and text.startswith(("$(", "${"), self.i):
                self._dollar(first)
                continue
            if q == '"' and c == "`":
                self._quoted(first)
                continue
            self.i += 1
        raise self._error(first, f"a {q} that is never closed")

    def _dollar(self, first: int) -> None:
        """Past $(...), $((...)), ${...}, $'...' or $"..."."""
        text = self.text
        kind = text[self.i + 1]
        self.i += 1
        if kind in "'\"":
            if kind == "'":  # $'...': backslash escapes the quote
                self.i += 1
                while self.i < len(text) and text[self.i] != "'":
                    if text[self.i] == "\n":
                        self.line += 1
                    self.i += 2 if text[self.i] == "\\" else 1
                if self.i >= len(text):
                    raise self._error(first, "a $' that is never closed")
                self.i += 1
            else:
                self._quoted(first)
            return
        close = ")" if kind == "(" else "}"
        depth = 0
        while self.i < len(text):
            c = text[self.i]
            if c == kind:
                depth += 1
                self.i += 1
            elif c == close:
                depth -= 1
                self.i += 1
                if depth == 0:
                    return
            elif c == "\n":
                self.line += 1
                self.i += 1
            elif c == "\\":
                if text.startswith("\n", self.i + 1):
                    self.line += 1
                self.i += 2
            elif c in "'\"`":
                self._quoted(first)
            elif c == "$" and text.startswith(("$(", "${", "$'", '$"'), self.i):
                self._dollar(first)
            elif c == "#" and kind == "(" and self._word_start():
                self._to_line_end()
            else:
                self.i += 1
        raise self._error(first, f"a ${kind} that is never closed")

    def _heredoc_word(self, first: int) -> tuple[str, bool]:
        """The delimiter after `<<` (quotes removed) and whether tabs are stripped."""
        text = self.text
        strip = text.startswith("-", self.i)
        if strip:
            self.i += 1
        while self.i < len(text) and text[self.i] in " \t":
            self.i += 1
        start = self.i
        self._word()
        raw = text[start : self.i]
        word = re.sub(r"""\\(.)|['"]""", lambda m: m.group(1) or "", raw)
        if not word:
            raise self._error(first, "a here-document without its delimiter")
        return word, strip

    def _heredoc_bodies(self, heredocs: list[tuple[str, bool]], first: int) -> None:
        """Past the bodies of the here-documents opened on the line just read."""
        text = self.text
        for word, strip in heredocs:
            while True:
                if self.i >= len(text):
                    raise self._error(first, f"here-document {word!r} is never closed")
                end = text.find("\n", self.i)
                line = text[self.i : len(text) if end < 0 else end]
                self.i = len(text) if end < 0 else end + 1
                self.line += 0 if end < 0 else 1
                if (line.lstrip("\t") if strip else line) == word:
                    break
