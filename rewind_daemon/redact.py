"""Secret redaction, applied before anything reaches the store.

RULES is the one list of what is redacted. The README's table is made from it
(`markdown_table`, checked by a test), and every rule's example is a test case.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import le
from typing import Any

MASK = "<redacted>"

# A shell word: quoted (the quotes are redacted with it) or bare.
_VALUE = r"""(?P<s>"[^"]*"|'[^']*'|[^\s'";&|]+)"""
# A word that makes a key, option or JSON field name secret. Not "tokenize":
# TOKENIZERS_PARALLELISM is not a secret.
_SECRET_WORD = (
    r"(?:password|passwd|passphrase|token(?!i[sz])|secret|api[_\-]?key|access[_\-]?key|"
    r"private[_\-]?key|credentials?)"
)
_SECRET_TRIGGERS = ("passw", "passphrase", "token", "secret", "key", "credential")

# Both helpers below keep every rule linear in the length of the text: a
# record may be megabytes, and a pattern that backtracks over it again from
# each place it could start would stall ingest for minutes.


def _secret_key(chars: str) -> str:
    """A whole word of `chars` that holds a secret word, never backtracked into
    (an atomic group, which `re` has only from Python 3.11)."""
    return rf"(?=[{chars}]*?{_SECRET_WORD})(?=(?P<key>[{chars}]+))(?P=key)"


def _rest_of_command(*programs: str) -> str:
    """The rest of one simple command (up to the next ; & | or line), but not
    past another of `programs`, where the rule starts again."""
    return r"(?:(?!" + "|".join(programs) + r")[^;&|\n])*?"


@dataclass(frozen=True)
class Rule:
    """One redaction rule.

    A text rule's `pattern` is a regex over a command (or any stored text): its
    groups named s, s2, s3 are the secret (the first that took part is masked),
    or without one the whole match. An env rule's `pattern` is searched,
    ignoring case, in an environment variable's name: the whole value of a
    variable so named is masked, in stored environments and in `NAME=value`
    words of commands. `triggers` are lowercase words one of which every match
    holds; a text holding none of them skips the rule (most text holds none).
    """

    name: str
    matches: str
    example: str
    redacted: str
    pattern: str
    triggers: tuple[str, ...] = ()
    kind: str = "text"


RULES: tuple[Rule, ...] = (
    Rule(
        "pem-private-key",
        "the body of a PEM or PGP private key block, also inside a heredoc; "
        "without its END line, up to the end",
        "cat > id <<EOF\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n"
        "-----END RSA PRIVATE KEY-----\nEOF",
        f"cat > id <<EOF\n-----BEGIN RSA PRIVATE KEY-----\n{MASK}\n"
        "-----END RSA PRIVATE KEY-----\nEOF",
        r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?P<s>.*?)"
        r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
        ("private key",),
    ),
    Rule(
        "aws-access-key-id",
        "AWS access key ids (`AKIA…`, `ASIA…` and the other id prefixes)",
        "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
        f"export AWS_ACCESS_KEY_ID={MASK}",
        r"\b(?P<s>(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[A-Z0-9]{16})\b",
        ("akia", "asia", "agpa", "aida", "aroa", "aipa", "anpa", "anva"),
    ),
    Rule(
        "github-token",
        "GitHub tokens `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`",
        "git clone https://ghp_0123456789abcdefghijklmnopqrstuvwxyzAB@github.com/o/r",
        f"git clone https://{MASK}@github.com/o/r",
        r"\b(?P<s>gh[pousr]_[A-Za-z0-9]{36,255})\b",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    ),
    Rule(
        "github-fine-grained-token",
        "GitHub fine-grained tokens `github_pat_`",
        "gh auth login --with-token github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
        f"gh auth login --with-token {MASK}",
        r"\b(?P<s>github_pat_[A-Za-z0-9_]{22,255})\b",
        ("github_pat_",),
    ),
    Rule(
        "gitlab-token",
        "GitLab tokens `glpat-`, `gldt-`, `glrt-`, `glptt-`",
        "curl -H 'PRIVATE-TOKEN: glpat-abcdefghij0123456789' https://gitlab.example",
        f"curl -H 'PRIVATE-TOKEN: {MASK}' https://gitlab.example",
        r"\b(?P<s>gl(?:pat|dt|rt|ptt)-[A-Za-z0-9_\-]{20,})",
        ("glpat-", "gldt-", "glrt-", "glptt-"),
    ),
    Rule(
        "slack-token",
        "Slack tokens `xoxa-`, `xoxb-`, `xoxp-`, `xoxo-`, `xoxs-`, `xoxr-`",
        "./notify xoxb-1234567890-abcdefghij",
        f"./notify {MASK}",
        r"\b(?P<s>xox[abposr]-[A-Za-z0-9\-]{10,})",
        ("xox",),
    ),
    Rule(
        "slack-webhook",
        "Slack incoming webhook URLs",
        "curl -d @msg https://hooks.slack.com/services/T000/B000/XXXX",
        f"curl -d @msg {MASK}",
        r"(?P<s>https://hooks\.slack\.com/services/[A-Za-z0-9/_\-]+)",
        ("hooks.slack",),
    ),
    Rule(
        "stripe-key",
        "Stripe secret and restricted keys `sk_live_`, `sk_test_`, `rk_live_`, `rk_test_`",
        "curl -u sk_live_4eC39HqLyjWDarjtT1zdp7dc: https://api.stripe.com",
        f"curl -u {MASK}: https://api.stripe.com",
        r"\b(?P<s>[sr]k_(?:live|test)_[A-Za-z0-9]{10,})",
        ("k_live_", "k_test_"),
    ),
    Rule(
        "vault-token",
        "HashiCorp Vault tokens `hvs.`, `hvb.`, `hvr.`",
        "vault login hvs.CAESIJ2rjxQq3RWE8AbGfQ1pZxk0",
        f"vault login {MASK}",
        r"\b(?P<s>hv[sbr]\.[A-Za-z0-9_\-]{20,})",
        ("hvs.", "hvb.", "hvr."),
    ),
    Rule(
        "vault-token-legacy",
        "Vault's older service tokens: `s.` and 24 letters or digits, a word of its own",
        "VAULT_ADDR=https://v vault login s.Oi1lRMJ2XrJkhKjUbJjNXoXz",
        f"VAULT_ADDR=https://v vault login {MASK}",
        r"(?<![\w.\-/])(?P<s>s\.[A-Za-z0-9]{24})(?![\w.\-/])",
        ("s.",),
    ),
    Rule(
        "npm-token",
        "npm access tokens `npm_`",
        "npm config set //registry.npmjs.org/:_authToken npm_abcdefghijklmnopqrstuvwxyz0123456789",
        f"npm config set //registry.npmjs.org/:_authToken {MASK}",
        r"\b(?P<s>npm_[A-Za-z0-9]{36})\b",
        ("npm_",),
    ),
    Rule(
        "authorization-header",
        "the credentials of `Authorization:` and `Proxy-Authorization:` headers "
        "(the scheme is kept)",
        "curl -H 'Authorization: Bearer eyJhbGciOi.abc.def' https://api",
        f"curl -H 'Authorization: Bearer {MASK}' https://api",
        r"(?i)\b(?:proxy-)?authorization\s*:\s*(?:(?:bearer|basic|token|digest)\s+)?"
        r"(?P<s>[^\s'\"]+)",
        ("authorization",),
    ),
    Rule(
        "url-credentials",
        "the password of `scheme://user:password@host`",
        "psql postgres://app:pa55w0rd@db/app",
        f"psql postgres://app:{MASK}@db/app",
        r"(?<![a-zA-Z0-9+.\-])[a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]+:(?P<s>[^@\s/]+)@",
        ("://",),
    ),
    Rule(
        "mysql-password",
        "`-pPASSWORD` of mysql (mysqldump, mariadb, …); a bare `-p`, which prompts, is left",
        "mysql -u root -phunter2 app",
        f"mysql -u root -p{MASK} app",
        r"\b(?:mysql|mariadb)[\w\-]*"
        + _rest_of_command("mysql", "mariadb")
        + r"(?<!\S)-p"
        + _VALUE,
        ("mysql", "mariadb"),
    ),
    Rule(
        "curl-user",
        "the password of curl `-u`/`--user`/`-U`/`--proxy-user USER:PASSWORD`",
        "curl -u alice:hunter2 https://example.com",
        f"curl -u alice:{MASK} https://example.com",
        r"\bcurl\b"
        + _rest_of_command("curl")
        + r"(?<!\S)(?:-[uU]|--(?:proxy-)?user(?![\w\-]))(?:=|\s*)"
        r"""(?:'[^':]*:(?P<s>[^']+)'|"[^":]*:(?P<s2>[^"]+)"|[^\s'":;&|]*:(?P<s3>[^\s'";&|]+))""",
        ("curl",),
    ),
    Rule(
        "sshpass",
        "`sshpass -p PASSWORD` (the options of the command it runs are left)",
        "sshpass -p hunter2 ssh -p 2222 deploy@host",
        f"sshpass -p {MASK} ssh -p 2222 deploy@host",
        r"\bsshpass(?:\s+(?:-[fdP]\s*\S+|-[evhV]+))*\s+-p\s*" + _VALUE,
        ("sshpass",),
    ),
    Rule(
        "docker-login",
        "`docker login -p PASSWORD` (podman, nerdctl, buildah too)",
        "docker login -u ci -p hunter2 registry.example.com",
        f"docker login -u ci -p {MASK} registry.example.com",
        r"\b(?:docker|podman|nerdctl|buildah)(?:\s+-\S+(?:\s+[^\s\-]\S*)?){0,8}\s+login\b"
        + _rest_of_command("docker", "podman", "nerdctl", "buildah")
        + r"(?<!\S)-p(?:=|\s+)?(?!-)"
        + _VALUE,
        ("login",),
    ),
    Rule(
        "openssl-pass",
        "openssl's `-passin`/`-passout`/`-pass pass:PASSWORD` (`env:` and `file:` are left)",
        "openssl rsa -in k.pem -passin pass:hunter2 -out k.der",
        f"openssl rsa -in k.pem -passin pass:{MASK} -out k.der",
        r"""(?<!\S)--?pass(?:in|out)?(?:\s+|=)"""
        r"""(?:'pass:(?P<s>[^']+)'|"pass:(?P<s2>[^"]+)"|pass:(?P<s3>[^\s'";&|]+))""",
        ("pass:",),
    ),
    Rule(
        "json-secret-field",
        'string values of JSON fields named like secrets (`"password"`, `"token"`, '
        '`"client_secret"`, `"api_key"`, `"auth"`, …), quotes escaped or not',
        """curl -d '{"user": "a", "password": "hunter2"}' https://api""",
        f"""curl -d '{{"user": "a", "password": "{MASK}"}}' https://api""",
        r'(?i)\\?"(?:' + _secret_key(r"\w.\-") + r'|auth)\\?"\s*:\s*\\?"'
        r'(?P<s>(?:[^"\\]|\\[^"])+)\\?"',
        (*_SECRET_TRIGGERS, "auth"),
    ),
    Rule(
        "secret-assignment",
        "`KEY=VALUE` and `KEY: VALUE` where KEY holds password, passwd, passphrase, token, "
        "secret, api_key, access_key, private_key or credential (also `--password=VALUE`)",
        "mysql -u root --password=hunter2",
        f"mysql -u root --password={MASK}",
        r"(?i)(?<![A-Za-z0-9_.\-])"
        + _secret_key(r"A-Za-z0-9_.\-")
        + r"(?:\s*=\s*|\s*:\s+)"
        + _VALUE,
        _SECRET_TRIGGERS,
    ),
    Rule(
        "secret-option",
        "the argument of an option named like a secret (`--password VALUE`, `--api-key VALUE`); "
        "not `--password-stdin` or `--password-file`",
        "docker login -u ci --password hunter2 ghcr.io",
        f"docker login -u ci --password {MASK} ghcr.io",
        r"(?i)(?<!\S)--?"
        + _secret_key(r"A-Za-z0-9_\-")
        + r"(?<!stdin)(?<!file)(?<!\-fd)\s+(?!-)"
        + _VALUE,
        _SECRET_TRIGGERS,
    ),
    Rule(
        "aws-secret-access-key",
        "`aws configure set aws_secret_access_key`/`aws_session_token VALUE`",
        "aws configure set aws_secret_access_key wJalrXUtnFEMI/K7MDENG",
        f"aws configure set aws_secret_access_key {MASK}",
        r"(?i)\baws_(?:secret_access_key|session_token)\s+" + _VALUE,
        ("aws_",),
    ),
    Rule(
        "secret-env-assignment",
        "`NAME=VALUE` words of a command (`export`, `env`, a prefix assignment; NAME in "
        "any case, but not a bare lower-case `key`) whose NAME an env rule below or the "
        "config's `env_names` matches",
        "DB_PASS=hunter2 ./migrate",
        f"DB_PASS={MASK} ./migrate",
        r"(?<![^\s;&|(])(?P<name>(?!key=)[A-Za-z_][A-Za-z0-9_]*)=" + _VALUE,
        ("pass", "pwd", "key", "secret", "token", "credential"),
    ),
    Rule(
        "env-secret-word",
        "variables whose name holds PASSWORD, PASSWD, PASSPHRASE, SECRET, TOKEN (not "
        "TOKENIZER…), CREDENTIAL, API_KEY, ACCESS_KEY or PRIVATE_KEY",
        "GITHUB_TOKEN=ghx1",
        f"GITHUB_TOKEN={MASK}",
        r"password|passwd|passphrase|secret|token(?!i[sz])|credential|api_?key|access_?key|"
        r"private_?key",
        kind="env",
    ),
    Rule(
        "env-pass",
        "variables named `PASS` or `*_PASS`",
        "DB_PASS=hunter2",
        f"DB_PASS={MASK}",
        r"(?:^|_)pass$",
        kind="env",
    ),
    Rule(
        "env-pwd",
        "variables named `*_PWD` (such as `MYSQL_PWD`; not `PWD` or `OLDPWD`)",
        "MYSQL_PWD=hunter2",
        f"MYSQL_PWD={MASK}",
        r"_pwd$",
        kind="env",
    ),
    Rule(
        "env-key",
        "variables named `KEY` or `*_KEY`",
        "STRIPE_KEY=abc123",
        f"STRIPE_KEY={MASK}",
        r"(?:^|_)key$",
        kind="env",
    ),
)

# --- long texts ---------------------------------------------------------------------

LONG = 4096  # from this length on, a text is searched as _long_text says
# Trying a rule at one place costs about what searching this many characters
# does: where its words are denser, the rule searches the whole text.
DENSE = 16

# The words every match of the rules about keys holds (see _STARTS): the
# secret words (_SECRET_WORD's), which also all secret variables' names
# hold but those ending in PASS or _PWD (ENV_RULES').
_KEY_WORDS = ("passw", "passphrase", "token", "secret", "key", "credential")
# The secret of every token rule but Slack's and Stripe's (AWS, GitHub,
# GitLab, Vault, npm) is a run of at least this many of these characters, its
# prefix in the run or just before it (`hvs.`, `s.`).
_TOKEN_RUN = 20
_TOKEN_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_TOKEN_TABLE = bytes(0x61 if c in _TOKEN_CHARS else 0x2E for c in range(256))
_TOKEN_PREFIX = re.compile(
    r"AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|gh[pousr]_|github_pat_|gl(?:pat|dt|rt|ptt)-"
    r"|hv[sbr]\.|s\.|npm_"
)


# The words _Scan.find is asked for. One pass of a multi-word search in C
# (google-re2's Set) tells which parts of a text hold which of them, and each
# is then looked for only in those parts: looking for each in all of it took
# about 0.5 ms a MB a word, 10 ms for the 22. Without google-re2 (a machine
# without it, the remote bundle), each is looked for in all of it, as before.
_WORDS = (
    "-----begin ", "xox", "hooks.slack.com/services/", "k_live_", "k_test_",
    "authorization", "auth", "://", "mysql", "mariadb", "curl", "sshpass", "login",
    "docker", "podman", "nerdctl", "buildah", "-pass", *_KEY_WORDS, "pass=", "_pwd=",
)  # fmt: skip
# What the Set looks for, where not the word: `auth` only as a JSON key (it is
# in most JSON logs as a value), before a quote and a space or colon (or a
# character not ASCII, `?` here). Neither it nor a word is longer than the
# overlap of two parts, so each is wholly in one part.
_SET_PATTERNS = {"auth": r'auth\\?"[\t-\r\x1c-\x20:?]'}
# What the C module (_termtext.scan_words, one pass for all the words) looks
# for, where not the word: `auth` as the Set does, before a quote, escaped or
# not, and what can begin `\s*:` (_JSON_AUTH's) as a byte of lowb.
_C_WORDS = {
    "auth": tuple(
        f"auth{quote}{c}".encode()
        for quote in ('"', '\\"')
        for c in "\t\n\v\f\r\x1c\x1d\x1e\x1f :?"
    )
}
# Where the C module checks a word's hits (_termtext.c's may_match): only those
# where its rule's pattern may match are tried (`_Scan.find_checked`), as most
# of these words are not a secret's (a URL with no user, curl with no `-u`).
_CHECKED = {b"://": "u", b"curl": "c"}
_PART = 1 << 16
_OVERLAP = max(map(len, _WORDS)) - 1
_word_set: Any = None  # (made when first needed; False: google-re2 is not there)
_SEARCHED = [w for word in _WORDS for w in _C_WORDS.get(word, (word.encode(),))]
_CHECKS = "".join(_CHECKED.get(w, "\0") for w in _SEARCHED).encode()
_find_all: Any
try:  # (built by pip where a compiler and Python's headers are)
    from ._termtext import scan_words as _find_all
except ImportError:
    _find_all = None


def _words_set() -> Any:
    """google-re2's Set of _WORDS, or False without google-re2."""
    global _word_set
    if _word_set is None:
        try:
            import re2
        except ImportError:
            _word_set = False
        else:
            options = re2.Options()
            options.max_mem = 64 << 20  # (22 words: a few hundred states, far below)
            words = re2.Set.SearchSet(options)
            for word in _WORDS:
                words.Add(_SET_PATTERNS.get(word) or re.escape(word))
            words.Compile()
            _word_set = words
    return _word_set


# The letters not ASCII that the rules, ignoring case, take for ASCII ones
# (Python's re: K, ſ, ı and İ, no other character).
_ASCII_TWINS = {0x212A: "k", 0x17F: "s", 0x131: "i", 0x130: "i"}


class _Scan:
    """Where the rules' words are in one text, each looked for once, when asked
    (kept as spans, so that they can follow the text's changes: see `edited`).
    They are looked for in `lowb`, the text lowercased as bytes, a character a
    byte (those not ASCII as `?`, which no word holds): the same places."""

    def __init__(self, value: str):
        self.value = value
        self._lowb: bytes | None = None
        self._runs: list[int] | None = None  # (the C module's: see tokens)
        self._found: dict[str, list[tuple[int, int]]] = {}
        self.derived: dict[object, list[int]] = {}  # (made from _found: not kept by `edited`)

    def lowered(self, start: int, end: int) -> str:
        """The lowercased text from `start` to `end` (made there alone: after a
        mask the lowercased text is not made again for a few characters)."""
        low = self.value[start:end]
        return low.lower() if low.isascii() else low.translate(_ASCII_TWINS).lower()

    @property
    def lowb(self) -> bytes:
        lowb = self._lowb
        if lowb is None:
            value = self.value
            if value.isascii():
                lowb = value.encode("ascii").lower()
            elif "\u0130" in value or "\u212a" in value or "ſ" in value or "ı" in value:
                lowb = value.translate(_ASCII_TWINS).encode("ascii", "replace").lower()
            else:  # (a character a byte: those not ASCII `?`; translate is slow)
                lowb = value.encode("ascii", "replace").lower()
            self._lowb = lowb
        return lowb

    def _find_words(self) -> bool:
        """Look for all of _WORDS at once, each in the parts of the text that
        hold it (kept by `edited`, as every word's hits); whether done."""
        if _find_all is not None:  # (in C: lowb, the words and the token runs at once)
            lowb, hits, self._runs, checked = _find_all(
                self.value, _SEARCHED, _TOKEN_CHARS, _TOKEN_RUN, _CHECKS
            )
            if self._lowb is None:
                self._lowb = lowb
            found = iter(hits)
            for searched, passed in zip(_SEARCHED, checked):
                if searched in _CHECKED:  # (valid for this text alone: not kept by `edited`)
                    self.derived[("checked", searched.decode())] = passed
            for word in _WORDS:
                ats = next(found)
                if word in _C_WORDS:
                    ats = sorted([*ats, *(at for _ in _C_WORDS[word][1:] for at in next(found))])
                n = len(word)
                self._found[word] = [(at, at + n) for at in ats]
            return True
        words = _words_set()
        if not words:
            return False
        lowb = self.lowb
        parts: dict[str, list[int]] = {}
        for at in range(0, len(lowb), _PART):
            for i in words.Match(lowb[at : at + _PART + _OVERLAP]) or ():
                parts.setdefault(_WORDS[i], []).append(at)
        size, find = len(lowb), lowb.find
        for word in _WORDS:
            w, hits = word.encode(), []
            for a in parts.get(word, ()):
                b = min(size, a + _PART + len(w) - 1)  # (a word beginning in the part)
                at = find(w, a, b)
                while at >= 0:
                    hits.append((at, at + len(w)))
                    at = find(w, at + 1, b)
            self._found[word] = hits
        return True

    def find(self, *words: str) -> list[int]:
        """Where each of `words` is in the lowercased text."""
        if len(words) == 1:
            return [at for at, _ in self._hits(words[0])]
        return [at for word in words for at, _ in self._hits(word)]

    def find_checked(self, word: str) -> list[int]:
        """`find(word)`, but where the C module checked the word's hits in this
        text (_CHECKED) those alone that may begin its rule's match. (A text
        edited since is not the one checked: a mask may have taken away what
        ended a command.)"""
        found = self.find(word)
        return self.derived.get(("checked", word), found)

    def _hits(self, word: str) -> list[tuple[int, int]]:
        hits = self._found.get(word)
        if hits is None and word in _WORDS and self._find_words():
            hits = self._found[word]
        elif hits is None:
            hits = self._found[word] = []
            w, lowb = word.encode(), self.lowb
            find, at = lowb.find, lowb.find(w)
            while at >= 0:
                hits.append((at, at + len(w)))
                at = find(w, at + 1)
        return hits

    def matches(self, word: str, pattern: re.Pattern[str]) -> list[int]:
        """Where `pattern`, which begins with `word` (ignoring case), matches."""
        hits = self._found.get(pattern.pattern)
        if hits is None:
            match, value = pattern.match, self.value
            hits = self._found[pattern.pattern] = [
                m.span()
                for m in (match(value, a) for a in self.find_checked(word))
                if m is not None
            ]
        return [at for at, _ in hits]

    def tokens(self) -> list[int]:
        """Where a token's prefix is, in or before a long enough run of its
        characters (the runs found in bytes: a character a byte)."""
        hits = self._found.get("")
        if hits is None:
            if self._runs is None and _find_all is not None and not self._found:
                self._find_words()  # (the runs are found with the words)
            # (Lowercased as token characters are, and no character that is
            # not ASCII is a token's; ſ, ı and K made s, i and k only join runs.)
            value, spans = self.value, []
            if self._runs is not None:
                found = self._runs
                spans = list(zip(found[::2], found[1::2]))
            else:
                runs = self.lowb.translate(_TOKEN_TABLE)
                long_run = b"a" * _TOKEN_RUN
                at = runs.find(long_run)
                while at >= 0:
                    end = runs.find(b".", at)
                    end = len(runs) if end < 0 else end
                    spans.append((at, end))
                    at = runs.find(long_run, end)
            hits = self._found[""] = [
                m.span() for a, b in spans for m in _TOKEN_PREFIX.finditer(value, max(0, a - 4), b)
            ]
        return [at for at, _ in hits]

    def edited(self, value: str, edits: list[tuple[int, int, int]]) -> _Scan:
        """This scan, of the text become `value` by `edits` ((start, end, length
        of what replaced it), in order): a word in what was replaced is gone,
        the others moved. A replacement (the mask) makes no word, in itself or
        with what is around it: it holds none, and begins and ends with
        characters none holds."""
        new = _Scan(value)
        for key, hits in self._found.items():
            if len(hits) > FEW_EDITS * len(edits):  # (many words, few masks: a slice at a time)
                starts = [start for start, _ in hits]
                if all(map(le, starts, starts[1:])):  # (they are: a part at a time, in C)
                    new._found[key] = _moved(hits, starts, edits)
                    continue
            kept, i, moved = [], 0, 0
            for start, end in hits:
                while i < len(edits) and edits[i][1] <= start:
                    a, b, n = edits[i]
                    moved += n - (b - a)
                    i += 1
                if i < len(edits) and edits[i][0] < end:
                    continue
                kept.append((start + moved, end + moved))
            new._found[key] = kept
        return new


FEW_EDITS = 16  # (words a mask, at least, for _moved: each mask costs it a bisect and a slice)


def _moved(
    hits: list[tuple[int, int]], starts: list[int], edits: list[tuple[int, int, int]]
) -> list[tuple[int, int]]:
    """_Scan.edited's for `hits` in order (`starts`: their starts): those that
    begin before an edit's end and end after its start are gone, the others
    moved as the edits before them say."""
    kept: list[tuple[int, int]] = []
    first = moved = 0
    for a, b, n in edits:
        last = bisect_left(starts, b, first)  # (these begin before this edit ends)
        kept += [(start + moved, end + moved) for start, end in hits[first:last] if end <= a]
        moved += n - (b - a)
        first = last
    kept += [(start + moved, end + moved) for start, end in hits[first:]]
    return kept


def _run_start(value: str, end: int, other: re.Pattern[str]) -> int:
    """Where the run ending at `end` of the characters `other` (a regex
    `(?s).*[^...]`) does not match starts: after the last it does."""
    while end > 0:
        lo = max(0, end - 256)
        m = other.match(value, lo, end)  # (from the right: .* then back to the last)
        if m is not None:
            return m.end()
        end = lo
    return 0


def _keys(*words: str, option: bool = False) -> Callable[[_Scan], list[int]]:
    """Where one of `words` is in what can be a key (`KEY=`, `KEY: `, `"KEY":`),
    or with `option` an option (`--KEY VALUE`): what follows the run of
    characters of a key holding it, the widest of the rules' (a rule's own
    run ends there too when what it needs after it is there), and where an
    option's run begins. (Each pattern takes in the rest of the run whatever
    follows, so a run holding many words is looked at once, from its first.)"""
    after = r"(\s)?" if option else r'(\\?"\s*:|\s*(?:=|:\s))?'
    # (Matched in the text itself, ignoring case: where the lowercased text
    # holds a word, the text matches it so, and no character is a word's
    # character (\w . -) lowercased and not before.)
    patterns = [re.compile(f"{word}[\\w.\\-]*{after}", re.IGNORECASE) for word in words]

    def hits(scan: _Scan) -> list[int]:
        found = scan.derived.get(hits)
        if found is None:
            # (Tried where the words are, as `finditer` would.)
            value, found = scan.value, []
            for p, word in zip(patterns, words):
                end = 0
                for a in scan.find(word):
                    if a >= end and (m := p.match(value, a)) is not None:
                        end = m.end()
                        if m.group(1) is not None:
                            found.append(a)
            scan.derived[hits] = found
            if option:  # (an option's run begins with a dash)
                found[:] = [at for at in found if value[_run_start(value, at, _KEY_BACK)] == "-"]
        return found

    return hits


_KEY_BACK = re.compile(r"(?s).*[^\w.\-]")


def _preceded(word: str, before: str, *offsets: int) -> Callable[[_Scan], list[int]]:
    """Matches begin `offsets` from `word` where `before` is right before it."""
    n = len(before)

    def starts(scan: _Scan) -> list[int]:
        return [
            at + o for at in scan.find(word) if at >= n and scan.lowered(at - n, at) == before
            for o in offsets
        ]  # fmt: skip

    return starts


def _runs(
    words: Callable[[_Scan], list[int]], chars: str, flags: int, *offsets: int
) -> Callable[[_Scan], list[int] | None]:
    """Matches begin where the run of `chars` holding one of the `words` found
    begins (plus `offsets`)."""
    run = re.compile(f"(?s).*[^{chars}]", flags)
    within = re.compile(f"[{chars}]*", flags)

    def starts(scan: _Scan) -> list[int] | None:
        value, firsts = scan.value, set()
        last, first = -1, 0
        hits = words(scan)
        if len(hits) * DENSE > len(value):
            return None
        for at in sorted(hits):
            # (Words in the same run share its start: each part of the text is
            # looked at once, however many words a long run holds.)
            if last < 0 or not within.fullmatch(value, last, at):
                first = _run_start(value, at, run)
            firsts.add(first)
            last = at
        return [first + o for first in firsts for o in offsets]

    return starts


def _after(words: tuple[str, ...], *offsets: int) -> Callable[[_Scan], list[int]]:
    """Matches begin at one of `words` (plus `offsets`)."""

    def starts(scan: _Scan) -> list[int]:
        return [at + o for word in words for at in scan.find_checked(word) for o in offsets]

    return starts


def _tokens(scan: _Scan) -> list[int]:
    return scan.tokens()


def _url(scan: _Scan) -> list[int]:
    # (Only where a user, a password and an @ follow: most URLs have none.)
    run = _SCHEME_RUN
    return [_run_start(scan.value, at, run) for at in scan.matches("://", _CREDENTIALS)]


def _docker(scan: _Scan) -> list[int]:
    return scan.find("docker", "podman", "nerdctl", "buildah") if scan.find("login") else []


def _both(one: list[int] | None, other: list[int] | None) -> list[int] | None:
    return None if one is None or other is None else one + other


# (Matched in the text itself: after `auth`, found in the lowercased text,
# nothing lowercasing changes can follow.)
_JSON_AUTH = re.compile(r'(?i)auth\\?"\s*:')
_SECRET_KEYS = _keys(*_KEY_WORDS)
_JSON_KEYS = _runs(_SECRET_KEYS, r"\w.\-", 0, -1, -2)
_SCHEME_RUN = re.compile(r"(?s).*[^a-zA-Z0-9+.\-]")
_CREDENTIALS = re.compile(r"://[^/\s:@]+:[^@\s/]+@")  # (no letters: in the text itself)

# Per text rule: where its matches can begin, from where its words are. Each
# rule's pattern says why: a match begins at the word (`\bcurl`), a fixed
# distance before it (`--pass`, `Proxy-Authorization`), or where the run of
# characters of a key or variable name that holds the word begins (the
# patterns' lookbehinds forbid those characters before it).
_STARTS = {
    "pem-private-key": _after(("-----begin ",), 0),
    "aws-access-key-id": _tokens,
    "github-token": _tokens,
    "github-fine-grained-token": _tokens,
    "gitlab-token": _tokens,
    "slack-token": _after(("xox",), 0),
    "slack-webhook": _after(("hooks.slack.com/services/",), -len("https://")),
    "stripe-key": _after(("k_live_", "k_test_"), -1),
    "vault-token": _tokens,
    "vault-token-legacy": _tokens,
    "npm-token": _tokens,
    "authorization-header": _after(("authorization",), 0, -len("proxy-")),
    "url-credentials": _url,
    "mysql-password": _after(("mysql", "mariadb"), 0),
    "curl-user": _after(("curl",), 0),
    "sshpass": _after(("sshpass",), 0),
    "docker-login": _docker,
    "openssl-pass": _after(("-pass",), 0, -1),
    # (A key with a secret word in it, or `auth` alone.)
    "json-secret-field": lambda scan: _both(
        _JSON_KEYS(scan),
        [at + o for at in scan.matches("auth", _JSON_AUTH) for o in (-1, -2)],
    ),
    "secret-assignment": _runs(_SECRET_KEYS, r"A-Za-z0-9_.\-", re.IGNORECASE, 0),
    "secret-option": _runs(_keys(*_KEY_WORDS, option=True), r"A-Za-z0-9_\-", re.IGNORECASE, 0),
    "aws-secret-access-key": lambda scan: [
        *_preceded("secret", "aws_", -len("aws_"))(scan),
        *_preceded("token", "aws_session_", -len("aws_session_"))(scan),
    ],
    # (A name holding a secret word, or ending in PASS, _PWD or KEY: `NAME=`.)
    "secret-env-assignment": _runs(
        lambda scan: _SECRET_KEYS(scan) + scan.find("pass=", "_pwd="), "A-Za-z0-9_", 0, 0
    ),
}


def _sub_at(
    pattern: re.Pattern[str],
    value: str,
    starts: list[int],
    repl: Callable[[re.Match[str]], str],
    edits: list[tuple[int, int, int]],
) -> str:
    """`pattern.sub(repl, value)` when its matches can begin only at `starts`;
    what it replaced is added to `edits` (see _Scan.edited)."""
    out: list[str] = []
    done = 0
    for at in sorted(set(starts)):
        if at < done:
            continue  # (also those before the start)
        m = pattern.match(value, at)
        if m is None or m.end() == at:
            continue
        whole, new = m.group(0), repl(m)
        if new != whole:
            # What changed: between what the two begin and end with alike.
            same = len(os.path.commonprefix((whole, new)))
            tail = len(os.path.commonprefix((whole[same:][::-1], new[same:][::-1])))
            edits.append((at + same, m.end() - tail, len(new) - same - tail))
        out += (value[done:at], new)
        done = m.end()
    if not out:
        return value
    out.append(value[done:])
    return "".join(out)


TEXT_RULES = tuple(r for r in RULES if r.kind == "text")
ENV_RULES = tuple(r for r in RULES if r.kind == "env")
_BY_NAME = "secret-env-assignment"


def markdown_table() -> str:
    """The rules as the README shows them."""

    def cell(text: str) -> str:
        text = text.replace("|", "\\|").replace("\n", "⏎")
        return f"`{text}`" if "`" not in text else text

    lines = ["| rule | redacts | example | stored as |", "| --- | --- | --- | --- |"]
    for r in RULES:
        where = " (a variable's name)" if r.kind == "env" else ""
        lines.append(f"| {r.name}{where} | {r.matches} | {cell(r.example)} | {cell(r.redacted)} |")
    return "\n".join(lines) + "\n"


# `"$PW"`, `${PW}`: a reference to a variable, not the secret itself.
_REFERENCE = re.compile(r'"?\$\{?[A-Za-z_][A-Za-z0-9_]*\}?"?')


def _secret_span(m: re.Match[str]) -> tuple[int, int] | None:
    """Where the secret is: the first group s, s2, s3 that took part (None: the
    whole match)."""
    for group in ("s", "s2", "s3"):
        if group in m.re.groupindex and m.start(group) >= 0:
            return m.span(group)
    return None


_Replace = Callable[[re.Match[str]], str]


class Redactor:
    def __init__(
        self, extra: Iterable[re.Pattern[str]] = (), env_names: Iterable[re.Pattern[str]] = ()
    ):
        """`extra`: more text patterns (s groups as in RULES); `env_names`: more
        patterns a secret variable's name matches (config's globs, compiled)."""
        env_names = list(env_names)
        self.secret_name = re.compile(
            "|".join([*(r.pattern for r in ENV_RULES), *(p.pattern for p in env_names)]),
            re.IGNORECASE,
        )
        self.rules: list[tuple[re.Pattern[str], tuple[str, ...], bool]] = []
        for r in TEXT_RULES:
            by_name = r.name == _BY_NAME
            # The config's names need not hold any of the built-in words.
            triggers = () if by_name and env_names else r.triggers
            self.rules.append((re.compile(r.pattern), triggers, by_name))
        self.rules += [(p, (), False) for p in extra]
        # One search for all the rules' words first: most text holds none, and
        # then only the rules without words (the config's) run.
        words = sorted({t for _, triggers, _ in self.rules for t in triggers})
        self._gate = re.compile("|".join(map(re.escape, words)))
        self._always = [rule for rule in self.rules if not rule[1]]
        # Environments differ from one another in a variable or two: remember
        # what each recent (name, value) became.
        self._env_cache: dict[tuple[str, str], tuple[str, int]] = {}
        # Where each rule's matches can begin in a long text (None: anywhere).
        self._starts = [
            None if not triggers else _STARTS[r.name]
            for (_, triggers, _), r in zip(self.rules, TEXT_RULES)
        ] + [None] * (len(self.rules) - len(TEXT_RULES))

    def text(self, value: str, found: list[str] | None = None) -> tuple[str, int]:
        """Return `value` with secrets masked, and how many were masked; each
        secret masked (as it was in `value`) is added to `found`."""
        # A long text: lowercased when needed, and where the words are, in
        # bytes, a character a byte (_Scan.lowb).
        if len(value) >= LONG:
            return self._long_text(value, found)
        low = value.lower()
        if not low.isascii() and ("ſ" in low or "ı" in low):
            low = low.replace("ſ", "s").replace("ı", "i")  # (as _Scan.lowb: the rules take them)
        rules = self.rules if self._gate.search(low) else self._always
        if not rules:
            return value, 0
        mask, mask_named, counted = self._maskers(found)
        for pattern, triggers, by_name in rules:
            # A plain loop: a generator here doubles the cost of redaction.
            for word in triggers:
                if word in low:
                    break
            else:
                if triggers:
                    continue  # none of the rule's words is in the text
            value = pattern.sub(mask_named if by_name else mask, value)
        return value, counted()

    def _long_text(self, value: str, found: list[str] | None = None) -> tuple[str, int]:
        """`text` for a long text (a command's output: megabytes). Searching all
        of it with every rule whose word it holds somewhere is what took the
        time; each rule is tried instead only where one of its matches can
        begin (_STARTS), found from where its words are. That gives what
        `pattern.sub` gives: it tries each place left to right, and a match
        can begin at no other."""
        mask, mask_named, counted = self._maskers(found)
        scan = _Scan(value)
        for (pattern, _, by_name), starts in zip(self.rules, self._starts):
            repl = mask_named if by_name else mask
            at = None if starts is None else starts(scan)
            if at is None or len(at) * DENSE > len(value):
                new = pattern.sub(repl, value)  # (the same, faster where words abound)
                if new != value:
                    scan = _Scan(new)
            else:
                edits: list[tuple[int, int, int]] = []
                new = _sub_at(pattern, value, at, repl, edits)
                if edits:
                    scan = scan.edited(new, edits)
            value = new
        return value, counted()

    def _maskers(
        self, found: list[str] | None = None
    ) -> tuple[_Replace, _Replace, Callable[[], int]]:
        """(the replacement of a rule's match, of a by-name rule's match, the count
        of secrets they masked); each secret masked is added to `found`."""
        count = 0

        def mask(m: re.Match[str]) -> str:
            nonlocal count
            whole = m.group(0)
            start, end = _secret_span(m) or m.span()
            secret = m.string[start:end]
            # Whitespace around a secret (the lines of a key block) stays.
            start += len(secret) - len(secret.lstrip())
            end -= len(secret) - len(secret.rstrip())
            secret = m.string[start:end]
            if not secret or secret == MASK or _REFERENCE.fullmatch(secret):
                return whole  # already masked by an earlier rule, or only names a variable
            count += 1
            if found is not None:
                found.append(secret)
            start, end = start - m.start(), end - m.start()
            return whole[:start] + MASK + whole[end:]

        def mask_named(m: re.Match[str]) -> str:
            return mask(m) if self.secret_name.search(m.group("name")) else m.group(0)

        return mask, mask_named, lambda: count

    def env(self, env: dict[str, str]) -> tuple[dict[str, str], int]:
        out: dict[str, str] = {}
        total = 0
        cache = self._env_cache
        if len(cache) > 8192:
            cache.clear()
        for name, value in env.items():
            hit = cache.get((name, value))
            if hit is None:
                if value and self.secret_name.search(name):
                    hit = (MASK, 1)
                else:
                    hit = self.text(value)
                cache[(name, value)] = hit
            out[name] = hit[0]
            total += hit[1]
        return out, total
