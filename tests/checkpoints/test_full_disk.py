"""rw's data directory on a full disk (a 1.2 MB tmpfs, mounted inside
`unshare -m` so that nothing leaks out of the test): a checkpoint that does
not fit fails and leaves nothing behind, and restores and gc go on working.
Real rw, real files."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ..conftest import RW

SCRIPT = """
set -u
cd "$1"
mount --make-rprivate /
mount -t tmpfs -o size=1200k tmpfs "$RW_HOME"
printf '[daemon]\\nautostart = false\\n' > cfg.toml
mkdir -p "$RW_HOME/config" && cp cfg.toml "$RW_HOME/config/config.toml"
step() { "$RW" "$@" > "out.$n" 2>&1; echo "rc=$?" >> "out.$n"; n=$((n + 1)); }
n=1
step checkpoint create --paths "$PWD/small"
step checkpoint create --paths "$PWD/big"
du -sk "$RW_HOME/data/objects/tmp" 2>/dev/null | cut -f1 > tmp.kb || echo 0 > tmp.kb
echo changed > small/a
step checkpoint restore 1 --yes
step gc
head -c 2000000 /dev/zero > "$RW_HOME/filler" 2>/dev/null
echo changed again > small/a
step checkpoint restore 1 --yes
step gc
cat small/a > final.a
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare"
)
def test_a_checkpoint_that_fills_the_disk_leaves_nothing_and_the_rest_still_works(tmp_path):
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "a").write_text("as checkpointed\n")
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "f").write_bytes(os.urandom(3_000_000))
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "RW": RW, "RW_HOME": str(home)}
    subprocess.run(
        ["timeout", "-s", "KILL", "120", "unshare", "-m", "bash", "-c", SCRIPT, "-",
         str(tmp_path)],
        check=True, env=env, timeout=150,
    )  # fmt: skip

    def out(n: int) -> tuple[int, str]:
        text = (tmp_path / f"out.{n}").read_text()
        body, _, rc = text.rpartition("rc=")
        assert "Traceback" not in body, body
        return int(rc), body

    assert out(1)[0] == 0
    rc, said = out(2)
    assert rc == 3 and "cannot write the checkpoint" in said, said
    assert int((tmp_path / "tmp.kb").read_text() or 0) == 0  # no partial object left
    assert out(3)[0] == 0, out(3)
    assert out(4)[0] == 0, out(4)
    # Full to the last byte: each says why in one line (exit 1: the store cannot
    # be opened; 3: the restore stopped), or works.
    for n in (5, 6):
        rc, said = out(n)
        assert rc == 0 or (rc in (1, 3) and len(said.strip().splitlines()) == 1), said
