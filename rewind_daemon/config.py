"""User configuration: TOML under the user config dir, with defaults."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RwError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_TEXT = """\
# rw configuration. Every key is optional.

# Commands matching any of these regexes are not recorded.
ignore = []

# Extra secret patterns (regexes) to redact, on top of the built-in ones.
# A pattern with a group redacts only the group.
redact = []

[daemon]
# Start the daemon from the shell hooks when it is not running.
autostart = true
"""


@dataclass
class Config:
    ignore: list[str] = field(default_factory=list)
    redact: list[str] = field(default_factory=list)
    autostart: bool = True
    source: Path | None = None

    def ignore_regexes(self) -> list[re.Pattern[str]]:
        return [_compile(p, "ignore") for p in self.ignore]

    def redact_regexes(self) -> list[re.Pattern[str]]:
        return [_compile(p, "redact") for p in self.redact]


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
    cfg = Config(_strings(data, "ignore", path), _strings(data, "redact", path), autostart, path)
    cfg.ignore_regexes()
    cfg.redact_regexes()
    return cfg
