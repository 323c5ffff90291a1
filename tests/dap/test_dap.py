"""The debugger driven by a real DAP client: @vscode/debugadapter-testsupport's
DebugClient, under node's test runner (tests/dap/js). Each scenario runs in its
own node process, fenced by a timeout on its whole process group."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from ..conftest import RW

JS = Path(__file__).parent / "js"
SCENARIOS = re.findall(r"""^\s*test\(\s*(['"`])(.+?)\1,""", (JS / "dap.test.mjs").read_text(), re.M)
SCENARIOS = [name for _, name in SCENARIOS]
# the two transports of the first scenario are made by a loop
SCENARIOS = [s for s in SCENARIOS if "${" not in s] + [
    "stop on entry at the first command over stdio",
    "stop on entry at the first command over --port",
    "$0 is the script in bash",
    "$0 is the script in zsh",
    "set -e scripts run on past a failure that does not end them, in bash",
    "set -e scripts run on past a failure that does not end them, in zsh",
    "under set -e what the debugger runs in the paused shell never ends it, in bash",
    "under set -e what the debugger runs in the paused shell never ends it, in zsh",
]
# stepping and pausing (step.test.mjs): each scenario is run from its file
STEPS = {name: "step.test.mjs" for _, name in re.findall(
    r"""^\s*test\(\s*(['"`])(.+?)\1,""", (JS / "step.test.mjs").read_text(), re.M)}  # fmt: skip
SCENARIOS += list(STEPS)


def run_scenario(name: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, RW_BIN=RW, RW_HOME=str(home))
    proc = subprocess.Popen(
        ["node", "--test", "--test-reporter=spec", "--test-name-pattern", f"^{re.escape(name)}$",
         STEPS.get(name, "dap.test.mjs")],
        cwd=JS, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"{name}: no result in {timeout} s\n{out}") from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # an adapter left behind
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_real_dap_client(name, rw_home):
    # missing, it fails (never skips): scripts/test installs node and the client
    assert shutil.which("node"), "node is not installed (scripts/test installs it)"
    assert (JS / "node_modules" / "@vscode" / "debugadapter-testsupport").is_dir(), (
        "the DAP client is not installed (scripts/test runs npm install in tests/dap/js)"
    )
    result = run_scenario(name, rw_home)
    assert result.returncode == 0, result.stdout
    # the runner ran exactly this scenario, and it passed
    assert re.search(r"^ℹ pass 1$", result.stdout, re.M), result.stdout
    assert re.search(r"^ℹ fail 0$", result.stdout, re.M), result.stdout


def test_every_scenario_is_found():
    assert len(SCENARIOS) >= 15
    assert len(set(SCENARIOS)) == len(SCENARIOS)


def test_the_dap_benchmark_runs_in_quick_mode():
    from ..test_bench import test_benchmark_runs_in_quick_mode

    test_benchmark_runs_in_quick_mode("dap")
