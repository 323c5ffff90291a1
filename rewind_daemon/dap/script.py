"""A shell script as the debugger's steps: each top-level command is one step
at its lines. Comments, blank lines and the shebang are not steps; compound
commands (if, case, loops, { }, ( ), and zsh's foreach, `{ } always { }`,
`case WORD { }` and short forms), function definitions, lines continued with `\\` or ending
in `|`, `&&` or `||`, and here-documents belong to the command they are part
of. Commands that share a line share a step (a breakpoint is set on a line).

This is not a parser: it follows quotes, brackets, here-documents and the
reserved words that open and close compound commands, which is what deciding
where a top-level command ends needs. A command substitution `$( )` is read
as the commands it holds (a `case` pattern's `)` or a here-document in it
does not close it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import RwError

_OPENERS = {"if": "fi", "case": "esac", "for": "done", "while": "done",
            "until": "done", "select": "done", "{": "}", "repeat": "done"}  # fmt: skip
_CLOSERS = {"fi", "esac", "done", "}"}
# zsh only: `foreach x (a b) ... end`
_ZSH_OPENERS = {"foreach": "end"}
# zsh's loops whose body may follow their header without `do`: `for x in a b; cmd`,
# `for x (a b) cmd`, `repeat 3 cmd` (SHORT_LOOPS, on by default)
_ZSH_SHORT_LOOPS = {"for", "repeat", "select"}
# Words after which the next word is again in command position.
_LEADING = {"then", "do", "else", "elif", "if", "while", "until", "!", "time", "{", "function",
            "coproc"}  # fmt: skip
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=\S*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
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

    def _command(self, substitution: int = 0) -> None:
        """Past one top-level command and the newline that ends it; or, in a
        command substitution opened on line `substitution`, past the commands
        it holds and the `)` that closes it."""
        text = self.text
        first = self.line
        stack: list[str] = []  # closers awaited: fi, done, esac, }, ), end
        heredocs: list[tuple[str, bool]] = []  # (delimiter, strip tabs) awaiting bodies
        command_position = True
        joined = False  # the line ended in |, && or ||: the command goes on
        after_function = False
        # zsh: the stack depths of loops whose header is read and whose body may
        # come without `do`; and a `repeat` whose count comes next
        short_loops: set[int] = set()
        repeat_count = False
        # zsh: the stack depth of an `if` whose [[ ]] or (( )) test just ended: a
        # word right after it is its body without `then` (`if [[ c ]] print yes`)
        short_if: int | None = None
        after_case = 0  # 1: `case` was the word before; 2: its subject was
        last = ""  # the word before
        while self.i < len(text):
            c = text[self.i]
            if c not in " \t":
                test_ended, short_if = short_if, None
            if c == "\n":
                line_text = text[text.rfind("\n", 0, self.i) + 1 : self.i]
                self.i += 1
                self.line += 1
                if heredocs:
                    self._heredoc_bodies(heredocs, first)
                    heredocs = []
                if not (stack or joined or substitution or _FUNCTION_HEAD.search(line_text)):
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
            if c == "<" and text.startswith("<<<", self.i):  # a here-string: a word follows
                self.i += 3
                command_position = False
                continue
            if c == "<" and text.startswith("<<", self.i):
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
            if c == "(" and text.startswith("((", self.i) and (command_position or last == "for"):
                # an arithmetic command, or for's (( ; ; )) (zsh: its body may follow)
                command_position = last == "for"
                self._balanced(first)
                if self.zsh and last == "if" and stack and stack[-1] == "fi":
                    short_if = len(stack) - 1
                continue
            if c == "(":
                stack.append(")")
                self.i += 1
                command_position = True
                continue
            if c == ")":
                if stack and stack[-1] == ")":
                    stack.pop()
                elif substitution and not stack:  # the end of the $( )
                    self.i += 1
                    if heredocs:
                        raise self._error(first, f"here-document {heredocs[0][0]!r} inside $( )")
                    return
                # else: a pattern of a case clause
                self.i += 1
                command_position = True
                continue
            if c in "<>":
                self.i += 1
                continue
            before, word = last, self._word()
            last = word
            if test_ended == len(stack) - 1 and stack[-1] == "fi" and word not in ("then", "{"):
                stack.pop()  # zsh: `if [[ c ]] cmd`: cmd is the if's body and its end
                command_position = True
            if self.zsh and word == "]]" and stack and stack[-1] == "fi":
                short_if = len(stack) - 1
            case_word, after_case = after_case, 0
            if case_word == 2 and self.zsh and word == "{" and stack and stack[-1] == "esac":
                stack[-1] = "}esac"  # zsh: `case WORD { PATTERN) ... ;; }`
                command_position = True
                continue
            if case_word == 1:
                after_case = 2  # the case's word: `in` or (zsh) `{` follows
            if repeat_count:  # zsh: `repeat 3 cmd`: the command follows the count
                repeat_count = False
                command_position = True
                continue
            if (
                command_position
                and len(stack) - 1 in short_loops
                and stack[-1] == "done"
                and word not in ("do", "{")
            ):
                # zsh: the loop's body follows its header without `do`: it is
                # this command (a sublist), which ends the loop
                short_loops.discard(len(stack) - 1)
                stack.pop()
            elif command_position:  # `do` or `{`: the loop's body, the long way
                short_loops.discard(len(stack) - 1)
            # in a case clause, `fi|done)` are patterns (`esac` is always the word)
            if stack and stack[-1] == "esac" != word and text.startswith((")", "|"), self.i):
                command_position = False
                continue
            if stack and stack[-1] == "}esac" and text.startswith((")", "|"), self.i):
                command_position = False
                continue
            if self.zsh and word == "}" and stack and stack[-1] == "}esac":
                stack.pop()
                command_position = True
                continue
            closes = command_position or (self.zsh and word == "}")
            closers = _CLOSERS | {"end"} if self.zsh else _CLOSERS
            if closes and word in closers and stack and stack[-1].rstrip("+") == word:
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
                after_case = 1 if word == "case" else 0
                if self.zsh and word in _ZSH_SHORT_LOOPS:
                    # its body may come without `do` once the header is read: after
                    # the `;` or newline that ends `for x in a b`, the `)` of
                    # `for x (a b)`, or `repeat`'s count
                    short_loops.add(len(stack) - 1)
                    repeat_count = word == "repeat"
            elif command_position and self.zsh and word in _ZSH_OPENERS:
                stack.append(_ZSH_OPENERS[word])
            # after `function NAME` comes the body, a command of its own (zsh:
            # `function a b { }` names several)
            command_position = (
                word in _LEADING
                or after_function
                or (self.zsh and word == "always")  # `{ ... } always { ... }`
                or (command_position and bool(_ASSIGNMENT.fullmatch(word)))
                or (before == "time" and word == "-p")  # `time -p { ... }`
                # `coproc NAME { ... }`: a compound command may follow the name
                or (before == "coproc" and word not in _OPENERS and bool(_NAME.fullmatch(word)))
            ) and word != "function"
            after_function = word == "function" or (
                self.zsh and after_function and word not in ("{", "(")
            )
        if substitution:
            raise self._error(substitution, "a $( that is never closed")
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
        if kind == "(" and not text.startswith("((", self.i):
            # $( ): the commands it holds, up to the `)` that closes it
            self.i += 1
            self._command(substitution=first)
            return
        self._balanced(first)

    def _balanced(self, first: int) -> None:
        """Past $((...)), ${...} (from the bracket) or an arithmetic command
        ((...)): brackets counted, quotes and expansions passed over (`<<` is
        a shift there, not a here-document)."""
        text = self.text
        kind = text[self.i]
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
