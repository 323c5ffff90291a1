"""Groups of hosts in an SSH config (rw guard --group), read from real files as
ssh reads them: keywords in any case, `=`, quotes, comments, Include with globs
relative to ~/.ssh, patterns and Match blocks naming no host."""

from __future__ import annotations

from pathlib import Path

import pytest

from rewind_daemon.errors import RwError
from rewind_daemon.remote.inventory import group_hosts, read_inventory, split_words


@pytest.fixture
def home(tmp_path) -> Path:
    (tmp_path / ".ssh" / "conf.d").mkdir(parents=True)
    (tmp_path / "extra").mkdir()
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_groups_are_marked_on_host_lines_above_or_inside_their_blocks(home):
    config = write(
        home / ".ssh" / "config",
        "# the fleet\n"
        "Include conf.d/*.conf ~/extra/more.conf\n"
        "HOST=app1  'app2'   # rw-group: web, prod\n"
        "    User deploy\n"
        'Host "web-*" !web-bad   # rw-group: web\n'
        "\n"
        "# rw-group: db\n"
        "\n"
        "Host db1\n"
        "  HostName 10.0.0.5\n"
        "  # rw-group: prod\n"
        "  Include ~/extra/db-only.conf\n"
        "Match host app3\n"
        "  # rw-group: web\n"
        "Match all\n"
        "Host   last  # just a host\n",
    )
    write(home / ".ssh" / "conf.d" / "20-b.conf", "host web-3\n\t# RW-GROUP: web\n")
    write(home / ".ssh" / "conf.d" / "10-a.conf", "Host web-2 # rw-group:web\n")
    write(home / ".ssh" / "conf.d" / "skipped.txt", "Host nope # rw-group: web\n")
    write(home / "extra" / "more.conf", "Host = web-4 db2  # rw-group: web db\n")
    write(home / "extra" / "db-only.conf", "Host db-replica  # rw-group: db\n")
    inv = read_inventory(str(config), home=str(home))
    # in the config's order, Include files where they stand (their names sorted)
    assert group_hosts(inv, "web") == ["web-2", "web-3", "web-4", "db2", "app1", "app2"]
    assert group_hosts(inv, "prod") == ["app1", "app2", "db1"]
    assert group_hosts(inv, "db") == ["web-4", "db2", "db1"]
    # A glob: the names on Host lines it matches; patterns there are no hosts.
    assert group_hosts(inv, "web-*") == ["web-2", "web-3", "web-4"]
    assert group_hosts(inv, "*") == ["web-2", "web-3", "web-4", "db2", "app1", "app2", "db1",
                                     "last"]  # fmt: skip
    assert inv.notes == [
        f"{config}:12: Include inside a Host or Match block: not read",
        f"{config}:14: rw-group on a Match block: ignored",
    ]
    assert inv.read == [str(config), str(home / ".ssh" / "conf.d" / "10-a.conf"),
                        str(home / ".ssh" / "conf.d" / "20-b.conf"),
                        str(home / "extra" / "more.conf")]  # fmt: skip


def test_words_split_as_ssh_splits_them():
    assert split_words("a \"b c\" 'd' e\\ f #g h") == ["a", "b c", "d", "e f"]
    assert split_words("a#b c") == ["a#b", "c"]
    with pytest.raises(ValueError):
        split_words('"open')


def test_what_is_not_a_group_is_one_clear_error(home, tmp_path):
    config = write(home / ".ssh" / "config", "Host a # rw-group: web\n")
    inv = read_inventory(str(config), home=str(home))
    for group, message in [
        ("db", "--group db: marks no Host line in "),
        ("z*", r"--group z\*: matches no name on a Host line in "),
        ("a b", "not a group name"),
    ]:
        with pytest.raises(RwError, match=message) as e:
            group_hosts(inv, group)
        assert "\n" not in str(e.value) and e.value.exit_code == 2
    bad = {
        "Host a\n# rw-group: web\n  User x\n": ":2: rw-group belongs to no Host line",
        "Host a\n  User 'x\n": ":2: an unclosed quote",
        "Host a\n=x\n": ":2: not a `Keyword value` line",
        "# rw-group: web\n": ":1: rw-group belongs to no Host line",
    }
    for text, message in bad.items():
        write(config, text)
        with pytest.raises(RwError, match=message):
            read_inventory(str(config), home=str(home))
    write(config, f"Include {config}\n")  # includes itself
    with pytest.raises(RwError, match="Include nested more than 16 deep"):
        read_inventory(str(config), home=str(home))
    with pytest.raises(RwError, match="cannot read it"):
        read_inventory(str(tmp_path / "nope"), home=str(home))
    # Without -F: the user's config, then the system's; a user without one is fine.
    (home / ".ssh" / "config").unlink()
    assert str(home / ".ssh" / "config") not in read_inventory(None, home=str(home)).read
