"""rw guard --host: what running the breaker on another host costs.

Against a real OpenSSH server on 127.0.0.1 (started here, for a user made
here, as the remote tests do: needs root and Debian's openssh-server).

Overhead: `rw guard --host H --paths ~/site -- true` (the bundle already
there, the connection set up by a ControlMaster) against plain `ssh H true`
over the same master, in the same run, as a ratio; and the same two without
a master (each run connects). The local `rw guard --paths DIR -- true` is
shown beside them: what the breaker itself costs, wherever it runs.

Bootstrap: the first run on a host that has no rw (the bundle made here and
sent there), against a run once it is there.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Verdicts, machine, parser, rw_env, rw_home, rw_program

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(
            f"bench: {' '.join(argv[:4])} exited {proc.returncode}: {proc.stderr[-500:]!r}"
        )
    return elapsed


def median(argv: list[str], env: dict[str, str], runs: int) -> float:
    timed(argv, env)  # warm-up
    return statistics.median(timed(argv, env) for _ in range(runs))


def check_lib(cache: Path, copy: Path, runs: int) -> None:
    """The stub's check of the bundle there before each run (rw.pyz by its
    sha256, lib/ against its MANIFEST), on a copy of the remote's directory
    as the runs left it (compiled modules and all), against hashing rw.pyz
    alone (all the check was before lib/ was checked)."""
    import hashlib

    from rewind_daemon.remote import bootstrap

    [where] = list(cache.iterdir())
    shutil.copytree(where, copy, symlinks=True)
    os.chmod(copy, 0o700)
    digest = (copy / "lib" / ".complete").read_text()
    code = bootstrap._STUB.split("home = os.path.expanduser")[0]
    code = code % {"no_python": 97, "nonce": "x", "name": "x", "digest": digest}
    space: dict = {}
    exec(code.replace("R, W = sys.stdin.buffer, sys.stdout.buffer", ""), space)

    def pyz_only() -> bool:
        return hashlib.sha256((copy / "rw.pyz").read_bytes()).hexdigest() == digest

    figures = []
    for check in (pyz_only, lambda: space["good"](str(copy))):
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            if not check():
                raise SystemExit("bench: the bundle there does not pass its own check")
            times.append(time.perf_counter() - t0)
        figures.append((statistics.median(times), min(times)))
    (pyz_med, pyz_min), (all_med, all_min) = figures
    print(f"  the check there before each run; median (min) of {runs}")
    print(
        f"    rw.pyz's sha256 alone                 {pyz_med * 1000:8.2f} ms ({pyz_min * 1000:.2f})"
    )
    print(f"    rw.pyz and lib/ against its MANIFEST  {all_med * 1000:8.2f} ms "
          f"({all_min * 1000:.2f})  (+{(all_med - pyz_med) * 1000:.1f} ms)")  # fmt: skip


def main() -> int:
    p = parser(__doc__.split("\n")[0])
    args = p.parse_args()
    runs = 3 if args.quick else 15
    firsts = 2 if args.quick else 5
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd"):
        raise SystemExit("bench: needs root and OpenSSH's sshd (apt-get install openssh-server)")
    from tests.remote.conftest import serve

    print(f"remote on {machine()}")
    v = Verdicts()
    with rw_home() as home, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with serve(work / "keys", "rwbench") as remote:
            site = remote.home / "site"
            site.mkdir()
            (site / "file").write_text("x\n")
            os.chown(site, remote.uid, remote.uid)
            os.chown(site / "file", remote.uid, remote.uid)
            master = work / "ssh_config_master"
            master.write_text(
                remote.ssh_config.read_text()
                + f"  ControlMaster auto\n  ControlPath {work}/cm-%r@%h:%p\n"
                "  ControlPersist 120\n"
            )
            env = rw_env(home)
            local_site = work / "local-site"
            local_site.mkdir()
            (local_site / "file").write_text("x\n")

            def guard_host(config: Path) -> list[str]:
                return [rw_program(), "guard", "--host", "rwbench", "--ssh-config", str(config),
                        "--paths", "~/site", "--", "true"]  # fmt: skip

            # Bootstrap: cold here and there, then cold there only, then warm.
            cache = home / "cache"
            cold_both = []
            cold_there = []
            for i in range(firsts):
                shutil.rmtree(remote.home / ".cache" / "rw", ignore_errors=True)
                if i == 0:
                    shutil.rmtree(cache, ignore_errors=True)
                    cold_both.append(timed(guard_host(remote.ssh_config), env))
                else:
                    cold_there.append(timed(guard_host(remote.ssh_config), env))
            warm = median(guard_host(remote.ssh_config), env, runs)
            print("  bootstrap (no master; each run connects)")
            print(f"    first run, bundle made here and sent  {cold_both[0] * 1000:8.1f} ms")
            if cold_there:
                t = statistics.median(cold_there)
                print(f"    bundle cached here, sent there        {t * 1000:8.1f} ms "
                      f"(median of {len(cold_there)})")  # fmt: skip
            print(f"    bundle there (checked, reused)        {warm * 1000:8.1f} ms "
                  f"(median of {runs})")  # fmt: skip

            check_lib(remote.home / ".cache" / "rw" / "remote", work / "copy", runs * 20)

            ssh_plain = ["ssh", "-F", str(remote.ssh_config), "rwbench", "true"]
            ssh_master = ["ssh", "-F", str(master), "rwbench", "true"]
            t_ssh = median(ssh_plain, env, runs)
            t_ssh_m = median(ssh_master, env, runs)
            t_host_m = median(guard_host(master), env, runs)
            t_local = median(
                [rw_program(), "guard", "--paths", str(local_site), "--", "true"], env, runs
            )
            subprocess.run(["ssh", "-F", str(master), "-O", "exit", "rwbench"], capture_output=True)
            print(f"  a trivial guarded command; median of {runs} runs")
            print(f"    ssh H true                            {t_ssh * 1000:8.1f} ms")
            print(f"    rw guard --host H -- true             {warm * 1000:8.1f} ms  "
                  f"({warm / t_ssh:.1f}x ssh H true)")  # fmt: skip
            print(f"    ssh H true (ControlMaster)            {t_ssh_m * 1000:8.1f} ms")
            print(f"    rw guard --host H -- true (master)    {t_host_m * 1000:8.1f} ms  "
                  f"({t_host_m / t_ssh_m:.1f}x ssh H true)")  # fmt: skip
            print(f"    rw guard -- true (here, no ssh)       {t_local * 1000:8.1f} ms")
            print(f"    --host adds {max(t_host_m - t_ssh_m - t_local, 0) * 1000:.1f} ms over "
                  "ssh plus a local guarded run")  # fmt: skip
    return v.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())
