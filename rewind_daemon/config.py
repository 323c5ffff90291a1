"""User configuration: TOML under the user config dir, with defaults."""

from __future__ import annotations

import fnmatch
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import RwError

if TYPE_CHECKING:
    from .redact import Redactor

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_TEXT = """\
# rw configuration. Every key is optional.

# Commands matching any of these regexes are not recorded.
ignore = []

[redact]
# Secret patterns (regexes) to redact, on top of the built-in rules. A pattern
# with a group named s, (?P<s>...), redacts only that group.
patterns = []
# Names of environment variables whose values are secret (globs, any case,
# such as 'ACME_*_PIN'), on top of the built-in ones.
env_names = []

[daemon]
# Start the daemon from the shell hooks when it is not running.
autostart = true

[record]
# Every new interactive terminal shell runs under `rw record`, which records
# each command's output (RW_RECORD=off in a shell's environment: not that one).
output = false
# Bytes kept of one step's output (beyond it, the first and last half, whole
# lines, and the count of bytes left out), and a cap on all stored output,
# compressed, that rw gc keeps (oldest steps' go first).
max_step_output = 8388608
max_total_output = 1073741824

[watch]
# Trees whose files every command checkpoints (rw watch add adds more).
paths = []
# Gitignore-style patterns left out of every watched tree.
exclude = []
# Files larger than this (bytes) are recorded by metadata only: not restorable.
max_file_size = 67108864
# How long (seconds) a hooked shell waits for the checkpoint before a command;
# past it the command runs without one.
timeout = 0.5

[checkpoint]
# What `rw checkpoint create` and `rw guard` include by default.
packages = false
services = false
# Keep a copy of every installed .deb, so packages can be reinstalled offline.
keep_debs = false
# Interpreters (or virtual environments) whose pip packages are captured;
# empty: the active one. Wheel directories pip may reinstall from.
pip = []
pip_find_links = []
# Services captured; empty: all of them.
services_list = []
# Retention (rw gc): checkpoints kept per session, and a cap on the total
# size of stored objects in bytes (oldest checkpoints go first).
keep_per_session = 200
max_total_size = 2147483648

[guard]
# rw guard: seconds without output before the run is halted (TIMEOUT).
timeout = 30
# Rules are regexes searched in each line of output, colour codes removed.
ignore_case = true
error = ['\\bERROR\\b', '\\bCRITICAL\\b', '\\bFATAL\\b', 'Exception\\b', '\\bTraceback\\b', '^E:']
warning = ['\\bWARN(ING)?\\b', '\\bdeprecated\\b']
skip = ['\\bSKIP', '\\bnot found\\b']
prompt = ['\\[y/n\\]', '\\(y/n\\)', '\\[yes/no\\]', '\\(yes/no\\)', 'password[^:\\n]*:\\s*$',
          'passphrase[^:\\n]*:\\s*$', 'press (enter|return|any key)']
# Lines that are fine even though a rule matches them.
allow = []
# With strict = true (or rw guard --strict), every line must match one of these.
expect = []
strict = false
# Hold the command's processes in a cgroup v2 subtree when one can be made.
cgroup = true
"""


GUARD_RULES: dict[str, list[str]] = tomllib.loads(DEFAULT_TEXT)["guard"]


@dataclass
class GuardConfig:
    """[guard]: what halts a guarded run."""

    timeout: float = 30.0
    ignore_case: bool = True
    error: list[str] = field(default_factory=lambda: list(GUARD_RULES["error"]))
    warning: list[str] = field(default_factory=lambda: list(GUARD_RULES["warning"]))
    skip: list[str] = field(default_factory=lambda: list(GUARD_RULES["skip"]))
    prompt: list[str] = field(default_factory=lambda: list(GUARD_RULES["prompt"]))
    allow: list[str] = field(default_factory=list)
    expect: list[str] = field(default_factory=list)
    strict: bool = False
    cgroup: bool = True


@dataclass
class Config:
    ignore: list[str] = field(default_factory=list)
    redact: list[str] = field(default_factory=list)  # [redact] patterns
    autostart: bool = True
    source: Path | None = None
    watch_paths: list[str] = field(default_factory=list)
    watch_exclude: list[str] = field(default_factory=list)
    max_file_size: int = 64 * 1024 * 1024
    watch_timeout: float = 0.5
    packages: bool = False
    services: bool = False
    keep_debs: bool = False
    pip: list[str] = field(default_factory=list)
    pip_find_links: list[str] = field(default_factory=list)
    services_list: list[str] = field(default_factory=list)
    keep_per_session: int = 200
    max_total_size: int = 2 * 1024 * 1024 * 1024
    guard: GuardConfig = field(default_factory=GuardConfig)
    redact_env_names: list[str] = field(default_factory=list)
    record_output: bool = False  # [record] output
    max_step_output: int = 8 * 1024 * 1024
    max_total_output: int = 1024 * 1024 * 1024

    def ignore_regexes(self) -> list[re.Pattern[str]]:
        return [_compile(p, "ignore") for p in self.ignore]

    def redact_regexes(self) -> list[re.Pattern[str]]:
        patterns = [_compile(p, "redact.patterns") for p in self.redact]
        for p in patterns:
            if p.search(""):
                raise RwError(
                    f"config: redact.patterns: {p.pattern!r} matches the empty string, "
                    "so it would mask between every two characters"
                )
        return patterns

    def redact_env_name_regexes(self) -> list[re.Pattern[str]]:
        """The [redact] env_names globs, as patterns a whole name must match."""
        for glob in self.redact_env_names:
            if not _ENV_GLOB.fullmatch(glob):
                raise RwError(
                    f"config: redact.env_names: {glob!r} is not a variable name glob "
                    "(letters, digits, _, and the wildcards * and ?)"
                )
        return [
            re.compile("^" + fnmatch.translate(g), re.IGNORECASE) for g in self.redact_env_names
        ]

    def redactor(self) -> Redactor:
        from .redact import Redactor  # (here: its rules cost 10 ms to compile)

        return Redactor(self.redact_regexes(), self.redact_env_name_regexes())


_ENV_GLOB = re.compile(r"[A-Za-z0-9_*?]+")


def _compile(pattern: str, key: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise RwError(f"config: invalid regex in {key}: {pattern!r}: {e}") from None


def _strings(data: dict, key: str, path: Path) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RwError(f"config {path}: '{key}' must be a list of strings")
    return list(value)


def _table(data: dict, key: str, path: Path) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise RwError(f"config {path}: [{key}] must be a table")
    return value


def _number(table: dict, key: str, default, path: Path, kind: type):
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise RwError(f"config {path}: {key} must be a non-negative number")
    if kind is int and not isinstance(value, int):
        raise RwError(f"config {path}: {key} must be a whole number")
    return kind(value)


def load(path: Path) -> Config:
    if not path.exists():
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise RwError(f"config {path}: cannot read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise RwError(f"config {path}: {e}") from None
    daemon = data.get("daemon", {})
    if not isinstance(daemon, dict):
        raise RwError(f"config {path}: [daemon] must be a table")
    autostart = daemon.get("autostart", True)
    if not isinstance(autostart, bool):
        raise RwError(f"config {path}: daemon.autostart must be true or false")
    cfg = Config(_strings(data, "ignore", path), autostart=autostart, source=path)
    redact = data.get("redact", [])
    if isinstance(redact, dict):
        # A misspelt key here would leave secrets in clear without a word.
        for key in redact:
            if key not in ("patterns", "env_names"):
                raise RwError(f"config {path}: [redact] has no key {key!r} (patterns, env_names)")
        cfg.redact = _strings(redact, "patterns", path)
        cfg.redact_env_names = _strings(redact, "env_names", path)
    else:  # the older form: a top-level list of patterns
        cfg.redact = _strings(data, "redact", path)
    record = _table(data, "record", path)
    for key in record:
        if key not in ("output", "max_step_output", "max_total_output"):
            raise RwError(
                f"config {path}: [record] has no key {key!r} "
                "(output, max_step_output, max_total_output)"
            )
    cfg.record_output = record.get("output", False)
    if not isinstance(cfg.record_output, bool):
        raise RwError(f"config {path}: record.output must be true or false")
    watch = _table(data, "watch", path)
    cfg.watch_paths = _strings(watch, "paths", path)
    cfg.watch_exclude = _strings(watch, "exclude", path)
    cfg.max_file_size = _number(watch, "max_file_size", cfg.max_file_size, path, int)
    cfg.watch_timeout = _number(watch, "timeout", cfg.watch_timeout, path, float)
    cp = _table(data, "checkpoint", path)
    for key in ("packages", "services", "keep_debs"):
        value = cp.get(key, getattr(cfg, key))
        if not isinstance(value, bool):
            raise RwError(f"config {path}: checkpoint.{key} must be true or false")
        setattr(cfg, key, value)
    for key in ("pip", "pip_find_links", "services_list"):
        setattr(cfg, key, _strings(cp, key, path))
    cfg.keep_per_session = _number(cp, "keep_per_session", cfg.keep_per_session, path, int)
    cfg.max_total_size = _number(cp, "max_total_size", cfg.max_total_size, path, int)
    for key in ("max_step_output", "max_total_output"):
        setattr(cfg, key, _number(record, key, getattr(cfg, key), path, int))
    guard = _table(data, "guard", path)
    g = cfg.guard
    g.timeout = _number(guard, "timeout", g.timeout, path, float)
    for key in ("ignore_case", "strict", "cgroup"):
        value = guard.get(key, getattr(g, key))
        if not isinstance(value, bool):
            raise RwError(f"config {path}: guard.{key} must be true or false")
        setattr(g, key, value)
    for key in ("error", "warning", "skip", "prompt", "allow", "expect"):
        if key in guard:
            setattr(g, key, _strings(guard, key, path))
        for p in getattr(g, key):
            _compile(p, f"guard.{key}")
    cfg.ignore_regexes()
    cfg.redact_regexes()
    cfg.redact_env_name_regexes()
    return cfg
