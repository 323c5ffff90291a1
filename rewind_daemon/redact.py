"""Secret redaction, applied before anything reaches the store."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "<redacted>"

_VALUE = r"""(?P<s>"[^"]*"|'[^']*'|[^\s'";&|]+)"""
_SECRET_WORD = (
    r"(?:password|passwd|passphrase|token|secret|api[_\-]?key|access[_\-]?key|"
    r"private[_\-]?key|credentials?)"
)

# Each pattern either redacts its whole match or, when it has a group named
# `s`, only that group.
BUILTIN_PATTERNS: list[str] = [
    # AWS access key ids
    r"\b(?P<s>(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[A-Z0-9]{16})\b",
    # GitHub, GitLab, Slack tokens
    r"\b(?P<s>gh[pousr]_[A-Za-z0-9]{36,255})\b",
    r"\b(?P<s>github_pat_[A-Za-z0-9_]{22,255})\b",
    r"\b(?P<s>glpat-[A-Za-z0-9_\-]{20,})",
    r"\b(?P<s>xox[abposr]-[A-Za-z0-9\-]{10,})",
    r"(?P<s>https://hooks\.slack\.com/services/[A-Za-z0-9/_\-]+)",
    # Authorization headers (keep the scheme word)
    r"(?i)\b(?:proxy-)?authorization\s*:\s*(?:(?:bearer|basic|token|digest)\s+)?(?P<s>[^\s'\"]+)",
    # key=value and key: value assignments of secret-looking keys
    r"(?i)[A-Za-z0-9_.\-]*" + _SECRET_WORD + r"[A-Za-z0-9_\-]*(?:\s*=\s*|\s*:\s+)" + _VALUE,
    # --password VALUE style options
    r"(?i)(?<!\S)--?[A-Za-z0-9_\-]*" + _SECRET_WORD + r"[A-Za-z0-9_\-]*\s+(?!-)" + _VALUE,
    # `aws configure set aws_secret_access_key VALUE`
    r"(?i)\baws_(?:secret_access_key|session_token)\s+" + _VALUE,
    # credentials in URLs: scheme://user:password@host
    r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]+:(?P<s>[^@\s/]+)@",
]

# Environment variables whose whole value is a secret.
SECRET_ENV_NAME = re.compile(
    r"(?i)(password|passwd|passphrase|token|secret|api_?key|access_?key|private_?key|credential)"
)


# Every built-in pattern needs one of these words in its match; most text has
# none, and a few substring searches are far cheaper than every pattern.
_TRIGGERS = (
    "akia", "asia", "agpa", "aida", "aroa", "aipa", "anpa", "anva", "gh", "glpat-", "xox",
    "hooks.slack", "authorization", "passw", "passphrase", "token", "secret", "key",
    "credential",
)  # fmt: skip


def _may_hold_secret(value: str) -> bool:
    low = value.lower()
    if any(t in low for t in _TRIGGERS):
        return True
    return "://" in low and "@" in low


class Redactor:
    def __init__(self, extra: Iterable[re.Pattern[str]] = ()):
        self.builtin = [re.compile(p) for p in BUILTIN_PATTERNS]
        self.extra = list(extra)
        # Environments differ from one another in a variable or two: remember
        # what each recent (name, value) became.
        self._env_cache: dict[tuple[str, str], tuple[str, int]] = {}

    def text(self, value: str) -> tuple[str, int]:
        """Return `value` with secrets masked, and how many were masked."""
        count = [0]

        def mask(m: re.Match[str]) -> str:
            secret = m.group("s") if "s" in m.re.groupindex else None
            if secret == MASK or (secret is None and m.group(0) == MASK):
                return m.group(0)  # already masked by an earlier pattern
            count[0] += 1
            if secret is None:
                return MASK
            start, end = m.start("s") - m.start(), m.end("s") - m.start()
            return m.group(0)[:start] + MASK + m.group(0)[end:]

        patterns = self.builtin + self.extra if _may_hold_secret(value) else self.extra
        for pattern in patterns:
            value = pattern.sub(mask, value)
        return value, count[0]

    def env(self, env: dict[str, str]) -> tuple[dict[str, str], int]:
        out: dict[str, str] = {}
        total = 0
        cache = self._env_cache
        if len(cache) > 8192:
            cache.clear()
        for name, value in env.items():
            hit = cache.get((name, value))
            if hit is None:
                if value and SECRET_ENV_NAME.search(name):
                    hit = (MASK, 1)
                else:
                    hit = self.text(value)
                cache[(name, value)] = hit
            out[name] = hit[0]
            total += hit[1]
        return out, total
