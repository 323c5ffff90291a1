"""Groups of hosts in the user's SSH config (rw guard --group).

OpenSSH has no groups of its own. A group is named by a comment on a `Host`
line, or on the comment lines just above it, or indented inside its block:

    Host web1 web2 web3   # rw-group: web, prod
    # rw-group: db
    Host db1 db2
        User postgres
        # rw-group: prod

and `--group web` is the names on those `Host` lines, in the order of the
config (Include followed where it stands). A group with a glob (`--group
'web-*'`) is instead every name on the config's `Host` lines that it matches.
Patterns on `Host` lines (`*`, `?`, `!negated`) name no host and are skipped;
`Match` blocks name none either, and a group marked on one is said to be
ignored; an `Include` inside a Host or Match block (other than `Host *` or
`Match all`), which ssh reads only for that block's hosts, is not read. The
config is read as ssh reads it: keywords in any case, `=` or
spaces after them, quoted words, `#` ending a line at the start of a word,
`Include` with globs and `~`, relative to ~/.ssh (or /etc/ssh in the system
config).
"""

from __future__ import annotations

import fnmatch
import glob
import os
import pwd
import re
from dataclasses import dataclass, field

from ..errors import RwError

SYSTEM_CONFIG = "/etc/ssh/ssh_config"
MAX_DEPTH = 16  # as ssh's own limit on nested Include
_MARKER = re.compile(r"rw-group\s*:\s*(.*)", re.IGNORECASE)
_GROUP_NAME = re.compile(r"[A-Za-z0-9_.@+-]+")
_GLOB = "*?["
_NO_HOST_LINE = (
    "%s: rw-group belongs to no Host line: put it on the Host line, just above it, "
    "or indented in its block"
)


def user_home() -> str:
    """The home ssh uses for ~ and ~/.ssh: the password entry's, not $HOME."""
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return os.path.expanduser("~")


def split_words(line: str) -> list[str]:
    """A config line's words as ssh splits them: spaces between words, double
    or single quotes around one, a `#` at the start of a word ending the line.
    An unclosed quote is an error."""
    words: list[str] = []
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n or line[i] == "#":
            break
        word = []
        while i < n and line[i] not in " \t":
            c = line[i]
            if c in "\"'":
                end = line.find(c, i + 1)
                if end < 0:
                    raise ValueError("an unclosed quote")
                word.append(line[i + 1 : end])
                i = end + 1
            elif c == "\\" and i + 1 < n:
                word.append(line[i + 1])
                i += 2
            else:
                word.append(c)
                i += 1
        words.append("".join(word))
    return words


def _keyword(line: str) -> tuple[str, list[str]]:
    """(keyword in lower case, its arguments): `Key value`, `Key=value`, `Key = value`."""
    m = re.match(r"\s*([A-Za-z][A-Za-z0-9]*)\s*(?:=\s*|\s+|$)(.*)", line)
    if m is None:
        raise ValueError("not a `Keyword value` line")
    return m.group(1).lower(), split_words(m.group(2))


def _marked(comment: str) -> list[str] | None:
    m = _MARKER.search(comment)
    if m is None:
        return None
    return [g for g in re.split(r"[\s,]+", m.group(1).strip()) if g]


def _is_pattern(name: str) -> bool:
    return name.startswith("!") or any(c in name for c in "*?")


@dataclass
class HostLine:
    names: list[str]  # the names on the line, patterns included
    groups: list[str] = field(default_factory=list)
    where: str = ""  # FILE:LINE

    @property
    def hosts(self) -> list[str]:
        return [n for n in self.names if not _is_pattern(n)]


@dataclass
class Inventory:
    lines: list[HostLine] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    read: list[str] = field(default_factory=list)  # the files read, in order


class _Reader:
    def __init__(self, home: str, inventory: Inventory):
        self.home = home
        self.inv = inventory

    def read(self, path: str, system: bool, depth: int = 0, required: bool = False) -> None:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError as e:
            if required:
                raise RwError(f"{path}: cannot read it: {e.strerror}") from None
            return
        self.inv.read.append(path)
        pending: list[str] = []  # groups marked on the comment lines above a Host line
        pending_at = ""  # where the first of those is
        block: HostLine | None = None  # the Host block the lines are in
        in_match = False
        for no, raw in enumerate(text.splitlines(), 1):
            where = f"{path}:{no}"
            stripped = raw.strip()
            if not stripped:
                continue
            if stripped.startswith("#"):
                groups = _marked(stripped)
                if groups is None:
                    continue
                indented = raw[:1] in (" ", "\t")
                if indented and in_match:
                    self.inv.notes.append(f"{where}: rw-group on a Match block: ignored")
                elif indented and block is not None:
                    block.groups += groups
                else:
                    pending_at = pending_at or where
                    pending += groups
                continue
            try:
                keyword, args = _keyword(raw)
            except ValueError as e:
                raise RwError(f"{where}: {e}") from None
            comment = re.search(r"(?:^|\s)#(.*)$", raw)
            inline = _marked(comment.group(1)) if comment else None
            if keyword == "host":
                block, in_match = HostLine(args, pending + (inline or []), where), False
                self.inv.lines.append(block)
                pending, pending_at = [], ""
                continue
            if pending:
                raise RwError(_NO_HOST_LINE % pending_at)
            if keyword == "match":
                block, in_match = None, [a.lower() for a in args] != ["all"]
                if inline:
                    self.inv.notes.append(f"{where}: rw-group on a Match block: ignored")
            elif keyword == "include" and (in_match or (block and block.names != ["*"])):
                # ssh reads it only for the hosts of that block: its Host lines
                # name hosts only as far as that block matches them.
                self.inv.notes.append(f"{where}: Include inside a Host or Match block: not read")
            elif keyword == "include":
                if depth >= MAX_DEPTH:
                    raise RwError(f"{where}: Include nested more than {MAX_DEPTH} deep")
                for pattern in args:
                    for name in self._expand(pattern, system):
                        self.read(name, system, depth + 1)
        if pending:
            raise RwError(_NO_HOST_LINE % pending_at)

    def _expand(self, pattern: str, system: bool) -> list[str]:
        if pattern == "~" or pattern.startswith("~/"):
            pattern = self.home + pattern[1:]
        elif not os.path.isabs(pattern):
            base = "/etc/ssh" if system else os.path.join(self.home, ".ssh")
            pattern = os.path.join(base, pattern)
        return sorted(glob.glob(pattern))


def read_inventory(ssh_config: str | None, home: str | None = None) -> Inventory:
    """The Host lines of the config ssh would read: FILE (ssh -F), or the
    user's ~/.ssh/config and then the system's."""
    home = home or user_home()
    inv = Inventory()
    reader = _Reader(home, inv)
    if ssh_config is not None:
        reader.read(ssh_config, system=False, required=True)
    else:
        reader.read(os.path.join(home, ".ssh", "config"), system=False)
        reader.read(SYSTEM_CONFIG, system=True)
    return inv


def group_hosts(inv: Inventory, group: str) -> list[str]:
    """The hosts of `group` (a name marked with rw-group, or a glob over the
    Host lines' names), each once, in the config's order."""
    pattern = any(c in group for c in _GLOB)
    if not pattern and not _GROUP_NAME.fullmatch(group):
        raise RwError(f"--group {group!r}: not a group name (letters, digits, _ . @ + -) or glob")
    hosts: list[str] = []
    for line in inv.lines:
        for host in line.hosts:
            chosen = fnmatch.fnmatchcase(host, group) if pattern else group in line.groups
            if chosen and host not in hosts:
                hosts.append(host)
    if not hosts:
        files = ", ".join(inv.read) or "no ssh config"
        if pattern:
            raise RwError(f"--group {group}: matches no name on a Host line in {files}")
        raise RwError(
            f"--group {group}: marks no Host line in {files} (# rw-group: {group} on a Host line)"
        )
    return hosts
