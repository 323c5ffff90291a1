"""Secret redaction."""

from __future__ import annotations

import re

import pytest

from rewind_daemon.redact import MASK, Redactor

CASES = [
    ("export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("aws configure set aws_secret_access_key wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI"),
    ("git push https://ghp_0123456789abcdefghijklmnopqrstuvwxyzAB@github.com/x", "ghp_"),
    ("curl -H 'PRIVATE-TOKEN: glpat-abcdefghij0123456789'", "glpat-abcdef"),
    ("SLACK=xoxb-1234567890-abcdefghij ./notify", "xoxb-1234567890"),
    ("curl -H 'Authorization: Bearer eyJhbGciOi.abc.def' https://api", "eyJhbGciOi"),
    ("mysql -u root --password=hunter2", "hunter2"),
    ("psql --password hunter3 -h db", "hunter3"),
    ('DB_PASSWORD="correct horse" ./migrate', "correct horse"),
    ("curl https://alice:pa55w0rd@example.com/x", "pa55w0rd"),
    ("echo token=abc123; ls", "abc123"),
]


@pytest.mark.parametrize("command,secret", CASES)
def test_secrets_in_commands_are_masked(command, secret):
    out, n = Redactor().text(command)
    assert secret not in out
    assert n >= 1 and MASK in out


@pytest.mark.parametrize(
    "command", ["ls -la", "grep -r secret .", "cat tokens.txt", "echo password reset", "git log"]
)
def test_ordinary_commands_are_untouched(command):
    assert Redactor().text(command) == (command, 0)


def test_env_values_by_name_and_by_content():
    env, n = Redactor().env(
        {"GITHUB_TOKEN": "abc", "PATH": "/bin", "DATABASE_URL": "postgres://u:pw@db/x", "E": ""}
    )
    assert env == {
        "GITHUB_TOKEN": MASK,
        "PATH": "/bin",
        "DATABASE_URL": f"postgres://u:{MASK}@db/x",
        "E": "",
    }
    assert n == 2


def test_extra_patterns_from_config():
    r = Redactor([re.compile(r"ACME-(?P<s>\d{6})")])
    assert r.text("deploy ACME-123456") == (f"deploy ACME-{MASK}", 1)
