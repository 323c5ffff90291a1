"""Hover and watch expressions: words with variables in them, expanded by rw.

A shell cannot be trusted to expand a hover's text without side effects:
bash's arithmetic falls back to a command substitution (`$((touch x) )`), a
value can be made into code (`${v@P}`, zsh's `${(e)v}`, an array subscript
evaluated by `$((x))`). So the text never reaches a shell. rw parses a small
grammar:

    $NAME  ${NAME}  ${#NAME}  ${NAME[i]}  ${NAME[@]}  ${#NAME[@]}  (i: digits, or a
    key of letters, digits, _ . -)  ${NAME-word}  ${NAME:-word}  $((arithmetic
    of integers, names, + - * / % and parentheses))  and plain words

where NAME may also be a special parameter: $1 ... ${10} (the script's
arguments), $0, $#, $@, $*, $? (the last step's status, as the script's next
command sees it), $$ and $!. It resolves them from the paused shell's
variables, fetched by name alone (`declare -p` and `"${NAME[@]}"` in bash,
`${(t)NAME}` and `"${(@kv)NAME}"` in zsh, `"$@"` and the like, in a
subshell): no value is ever evaluated. Anything else is refused and said so;
the console (the `repl` context) runs commands, that is its job."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import RwError

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# The special parameters read here: the script's arguments, their count, the
# last status, the shell's and its last background job's process ids.
_SPECIAL = r"[0-9]+|[#?@*$!]"
_INDEX = r"[@*]|[0-9]+|[A-Za-z0-9_.-]+"
_LITERAL_WORD = r"[^$`\\\"{}]*"
_FORMS = re.compile(
    rf"\$(?P<bare>{_NAME}|[0-9]|[#?@*$!])"
    rf"|\$\{{(?P<len>#)?(?P<name>{_NAME}|{_SPECIAL})(?:\[(?P<index>{_INDEX})\])?"
    rf"(?:(?P<op>:?-)(?P<word>{_LITERAL_WORD}))?\}}"
    # (a $ in it begins a name, checked by _ARITH_TOKEN: what else it begins is refused)
    r"|\$\(\((?P<arith>[^()`\\\"]*(?:\([^()`\\\"]*\)[^()`\\\"]*)*)\)\)"
)
_ARITH_SPECIAL = r"[0-9]|[#?$!]"  # (special parameters arithmetic reads: numbers)
_ARITH_TOKEN = re.compile(
    rf"\s*(?:(?P<num>[0-9]+)|\$?(?P<var>{_NAME})|\$(?P<special>{_ARITH_SPECIAL})"
    r"|(?P<op>[-+*/%()]))"
)
_INTEGER = re.compile(r"\s*[-+]?[0-9]+\s*\Z")
GRAMMAR = (
    "$NAME, ${NAME}, ${#NAME}, ${NAME[i]}, ${NAME[@]}, ${NAME:-word}, $((arithmetic)), "
    "$1, $#, $@, $?"
)


class NotEvaluated(RwError):
    """A hover or watch expression outside the grammar: never handed to a shell."""


def refuse(what: str) -> NotEvaluated:
    return NotEvaluated(
        f"not evaluated on hover: {what} (hovers and watches expand words only: "
        f"{GRAMMAR}; run commands in the console)"
    )


@dataclass(frozen=True)
class Variable:
    kind: str  # "unset", "scalar", "array" (indexed or associative), "ref"
    items: list[tuple[str, str]]  # (key, value); a scalar's key is "0"


@dataclass(frozen=True)
class _Ref:
    name: str
    length: bool
    index: str | None
    op: str | None
    word: str


def parse(text: str) -> list[str | _Ref | tuple[str, list[str]]]:
    """The pieces of `text`: literal strings, variable references, and
    arithmetic (its source and the names it reads); NotEvaluated otherwise."""
    pieces: list[str | _Ref | tuple[str, list[str]]] = []
    i = 0
    while i < len(text):
        m = _FORMS.match(text, i) if text[i] == "$" else None
        if m is None:
            j = i + 1 if text[i] == "$" else i
            while j < len(text) and text[j] != "$":
                j += 1
            literal = text[i:j]
            if literal.startswith("$") or any(c in literal for c in '`"\\'):
                rest = text[i:]
                raise refuse(rest if len(rest) <= 40 else rest[:39] + "…")
            pieces.append(literal)
            i = j
            continue
        if m.group("bare"):
            pieces.append(_Ref(m.group("bare"), False, None, None, ""))
        elif m.group("name"):
            ref = _Ref(m.group("name"), bool(m.group("len")), m.group("index"), m.group("op"),
                       m.group("word") or "")  # fmt: skip
            if (ref.length and ref.op) or (ref.index is not None and _special(ref.name)):
                raise refuse(m.group(0))
            pieces.append(ref)
        else:
            source = m.group("arith")
            tokens = _arith_tokens(source, m.group(0))
            names = [t.group("var") or t.group("special") for t in tokens
                     if t.group("var") or t.group("special")]  # fmt: skip
            pieces.append((source, names))
        i = m.end()
    return pieces


def names_in(pieces: list[str | _Ref | tuple[str, list[str]]]) -> list[str]:
    out: list[str] = []
    for p in pieces:
        for name in [p.name] if isinstance(p, _Ref) else p[1] if isinstance(p, tuple) else []:
            if name not in out:
                out.append(name)
    return out


def _special(name: str) -> bool:
    return not re.fullmatch(_NAME, name)


def expand(text: str, shell: str, run: Callable[[str], bytes], status: int | None = None) -> str:
    """`text` expanded with the variables of the shell that `run` runs code in
    (`status`: $?, the status the script's next command sees)."""
    pieces = parse(text)
    names = names_in(pieces)
    variables = fetch(names, shell, run, status) if names else {}
    return "".join(_resolve(p, variables, shell) for p in pieces)


def fetch(
    names: list[str], shell: str, run: Callable[[str], bytes], status: int | None = None
) -> dict[str, Variable]:
    """The named variables of the paused shell, read without evaluating a value
    (special parameters too: `status` is $?, which the paused shell's own $?
    is not: rw's commands ran there since)."""
    found: dict[str, Variable] = {}
    if "?" in names:
        if status is None:
            raise refuse("$? (the last status is not known here)")
        found["?"] = Variable("scalar", [("0", str(status))])
    named = [name for name in names if not _special(name)]
    specials = [name for name in names if _special(name) and name != "?"]
    code = _ZSH_FETCH if shell == "zsh" else _BASH_FETCH
    body = "\n".join(code.replace("%N%", name) for name in named)
    if shell == "zsh" and named:  # (a function has its own $@ and $0: read before it)
        body = f"() {{\n\\builtin emulate -L zsh\n{body}\n}}"
    if specials:
        body = f"{_SPECIALS_FETCH}\n{body}"
    if not body:
        return found
    out = run(f"( {body}\n) 2>/dev/null")  # in a subshell: nothing it sets stays
    fields = out.decode("utf-8", "replace").split("\0")
    at = 0
    try:
        if specials:
            count = int(fields[0])
            args = fields[4 : 4 + count]
            if len(args) != count:
                raise ValueError
            found["#"], found["$"], found["0"] = (
                _scalar(str(count)), _scalar(fields[1]), _scalar(fields[3])
            )  # fmt: skip
            found["!"] = _scalar(fields[2]) if fields[2] else Variable("unset", [])
            found["@"] = found["*"] = Variable(
                "array", [(str(i), v) for i, v in enumerate(args, 1)]
            )  # fmt: skip
            for name in specials:
                if name.isdigit():  # ($0 as ${00}; past the last argument: unset)
                    n = int(name)
                    arg = found["0"] if n == 0 else _scalar(args[n - 1]) if n <= count else None
                    found[name] = arg or Variable("unset", [])
            at = 4 + count
        for name in named:
            kind, count = fields[at], int(fields[at + 1])
            pairs = fields[at + 2 : at + 2 + 2 * count]
            if len(pairs) != 2 * count:
                raise ValueError
            found[name] = Variable(kind, list(zip(pairs[::2], pairs[1::2])))
            at += 2 + 2 * count
    except (IndexError, ValueError):
        raise RwError("the paused shell did not say what its variables hold") from None
    return found


def _scalar(value: str) -> Variable:
    return Variable("scalar", [("0", value)])


# The special parameters (outside a function, which has its own): how many
# arguments, $$, $! (empty where no job was started), $0, the arguments.
_SPECIALS_FETCH = r"""\builtin printf '%s\0' "$#" "$$" "${!-}" "$0" "$@";"""

# One variable N: its kind, how many (key, value) pairs, the pairs; NUL after each.
# bash: `declare -p` tells a reference (-n), which is refused: reading one would
# evaluate the subscript it names.
_BASH_FETCH = r"""if __rw_d=$(\builtin declare -p %N%); then
  __rw_f=${__rw_d#declare -}; __rw_f=${__rw_f%% *}
  case $__rw_f in
  *n*) \builtin printf '%s\0' ref 0 ;;
  *[aA]*) \builtin printf '%s\0' array "${#%N%[@]}"
    for __rw_k in "${!%N%[@]}"; do \builtin printf '%s\0' "$__rw_k" "${%N%[$__rw_k]}"; done ;;
  *) \builtin printf '%s\0' scalar 1 0 "${%N%-}" ;;
  esac
else \builtin printf '%s\0' unset 0; fi"""
_ZSH_FETCH = r"""if (( ${+%N%} )); then
  case ${(t)%N%} in
  (array*) \builtin printf '%s\0' array ${#%N%}; __rw_i=0
    for __rw_v in "${(@)%N%}"; do
      __rw_i=$(( __rw_i + 1 )); \builtin printf '%s\0' $__rw_i "$__rw_v"
    done ;;
  (association*) \builtin printf '%s\0' array ${#%N%}
    for __rw_k __rw_v in "${(@kv)%N%}"; do \builtin printf '%s\0' "$__rw_k" "$__rw_v"; done ;;
  (*) \builtin printf '%s\0' scalar 1 0 "$%N%" ;;
  esac
else \builtin printf '%s\0' unset 0; fi"""


def _resolve(piece: str | _Ref | tuple[str, list[str]], variables: dict[str, Variable],
             shell: str) -> str:  # fmt: skip
    if isinstance(piece, str):
        return piece
    if isinstance(piece, tuple):
        return str(_arithmetic(piece[0], variables, shell))
    var = variables[piece.name]
    if var.kind == "ref":
        raise refuse(f"{piece.name} is a reference to another variable")
    if piece.name in ("@", "*"):  # (all the arguments, `${#@}` their count)
        values = [v for _, v in var.items]
        return (
            str(len(values))
            if piece.length
            else " ".join(values) or (piece.word if piece.op is not None else "")
        )
    values = _values(var, piece.index, shell)
    if piece.length:
        whole_array = piece.index in ("@", "*") or (
            piece.index is None and var.kind == "array" and shell == "zsh"
        )
        return str(len(values)) if whole_array else str(len(" ".join(values)))
    text = " ".join(values)
    if piece.op is not None and (not values or (piece.op == ":-" and text == "")):
        return piece.word
    return text


def _values(var: Variable, index: str | None, shell: str) -> list[str]:
    """The values a reference to `var` (with `index`) stands for."""
    if var.kind == "unset":
        return []
    items = dict(var.items)
    if index in ("@", "*"):
        return [v for _, v in var.items]
    if index is None:
        if var.kind == "array" and shell == "zsh":
            return [v for _, v in var.items]  # zsh: $ARR is all of it
        index = "0" if var.kind == "scalar" or shell != "zsh" else "1"
    return [items[index]] if index in items else []


def _arith_tokens(source: str, whole: str) -> list[re.Match[str]]:
    tokens, i = [], 0
    while i < len(source):
        if source[i:].strip() == "":
            break
        m = _ARITH_TOKEN.match(source, i)
        if m is None or m.end() == i:
            raise refuse(whole)
        tokens.append(m)
        i = m.end()
    return tokens


def _arithmetic(source: str, variables: dict[str, Variable], shell: str) -> int:
    """Integer arithmetic of numbers and variables holding numbers (a variable
    holding anything else is refused: a shell would evaluate it as code)."""
    whole = f"$(({source}))"
    tokens = [t.group(0).strip() for t in _arith_tokens(source, whole)]
    at = 0

    def value(name: str) -> int:
        if variables[name].kind == "ref":
            raise refuse(f"{name} is a reference to another variable")
        values = _values(variables[name], None, shell)
        text = values[0] if values else ""
        if text.strip() == "":
            return 0
        if not _INTEGER.match(text):
            raise refuse(f"{whole}: {name} holds {text[:30]!r}, not a number")
        return int(text)

    def peek() -> str | None:
        return tokens[at] if at < len(tokens) else None

    def take() -> str:
        nonlocal at
        if at >= len(tokens):
            raise refuse(whole)
        at += 1
        return tokens[at - 1]

    def primary() -> int:
        t = take()
        if t == "(":
            v = expression()
            if take() != ")":
                raise refuse(whole)
            return v
        if t in ("-", "+"):
            v = primary()
            return -v if t == "-" else v
        if t.isdigit():
            return int(t)
        name = t[1:] if t.startswith("$") else t
        if re.fullmatch(_NAME, name) or (name != t and re.fullmatch(_ARITH_SPECIAL, name)):
            return value(name)
        raise refuse(whole)

    def term() -> int:
        v = primary()
        while peek() in ("*", "/", "%"):
            op, rhs = take(), primary()
            if op == "*":
                v *= rhs
            elif rhs == 0:
                raise RwError(f"{whole}: division by 0")
            else:
                q = abs(v) // abs(rhs) * (1 if (v >= 0) == (rhs >= 0) else -1)  # toward 0
                v = q if op == "/" else v - rhs * q
        return v

    def expression() -> int:
        v = term()
        while peek() in ("+", "-"):
            v = v + term() if take() == "+" else v - term()
        return v

    result = expression()
    if at != len(tokens):
        raise refuse(whole)
    return result
