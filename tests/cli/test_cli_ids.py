"""Ids and step numbers past what SQLite stores (2^63 and up): a one-line
error, exit 2, never a traceback. The real rw program."""

from __future__ import annotations

import pytest

from ..conftest import rw, write_config

HUGE = ("9223372036854775808", "99999999999999999999999")


@pytest.mark.parametrize("n", HUGE)
@pytest.mark.parametrize(
    "args",
    [
        ("checkpoint", "show"),
        ("checkpoint", "diff"),
        ("checkpoint", "restore", "--dry-run"),
        ("checkpoint", "rm"),
        ("show", "last"),
        ("back",),
        ("breakpoint", "rm", "last"),
    ],
    ids=lambda a: " ".join(a),
)
def test_an_id_too_large_is_a_usage_error(rw_home, args, n):
    write_config(rw_home, "[daemon]\nautostart = false\n")
    rw("checkpoint", "create", "--paths", str(rw_home / ".."))  # (a store with a checkpoint)
    proc = rw(*args, n, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "range" in proc.stderr or "from 1 to" in proc.stderr, proc.stderr


def test_the_largest_id_is_simply_not_found(rw_home):
    write_config(rw_home, "[daemon]\nautostart = false\n")
    proc = rw("checkpoint", "show", "9223372036854775807", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("rw: no checkpoint"), proc.stderr
