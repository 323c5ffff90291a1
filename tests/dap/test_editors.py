"""The editor setups the README shows: the VS Code extension's launch
attributes are the adapter's, and the README's launch.json launches."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rewind_daemon.dap.launching import LAUNCH_ATTRIBUTES

from .test_protocol import adapter  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parents[2]
VSCODE = ROOT / "editors" / "vscode"


def readme_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Debugging in your editor", 1)[1].split("\n## ", 1)[0]


def test_the_extension_contributes_the_adapters_launch_attributes():
    manifest = json.loads((VSCODE / "package.json").read_text())
    (debugger,) = manifest["contributes"]["debuggers"]
    assert debugger["type"] == "rw"
    launch = debugger["configurationAttributes"]["launch"]
    assert sorted(launch["properties"]) == sorted(LAUNCH_ATTRIBUTES)
    for config in debugger["initialConfigurations"] + [
        s["body"] for s in debugger["configurationSnippets"]
    ]:
        assert set(config) - {"type", "request", "name"} <= set(LAUNCH_ATTRIBUTES)
    assert "new vscode.DebugAdapterExecutable(rw, ['dap'])" in (VSCODE / "extension.js").read_text()
    assert set(manifest["files"]) <= {p.name for p in VSCODE.iterdir()}


def test_the_readmes_vscode_configuration_launches(adapter, tmp_path):  # noqa: F811
    block = re.search(r"```json\n(.*?)```", readme_section(), re.S)
    assert block, "the README's launch.json"
    (config,) = json.loads(block.group(1))["configurations"]
    assert set(config) - {"type", "request", "name"} <= set(LAUNCH_ATTRIBUTES)
    (tmp_path / "deploy.sh").write_text('echo "deploying to $1"\n')
    (tmp_path / "build").mkdir()
    args = json.loads(json.dumps(config).replace("${workspaceFolder}", str(tmp_path)))
    adapter.response(adapter.request("initialize", adapterID="rw"))
    r, _ = adapter.response(adapter.request("launch", **args))
    assert r["success"], r
    adapter.response(adapter.request("configurationDone"))
    adapter.response(adapter.request("continue", threadId=1))
    said = []
    while (m := adapter.read()).get("event") != "terminated":
        if m.get("event") == "output":
            said.append(m["body"]["output"])
    assert "deploying to staging\n" in said


def test_the_readmes_nvim_dap_configuration_names_what_the_adapter_takes():
    lua = re.search(r"```lua\n(.*?)```", readme_section(), re.S)
    assert lua
    assert "command = 'rw', args = { 'dap' }" in lua.group(1)
    keys = set(re.findall(r"^\s+(\w+) = ", lua.group(1), re.M))
    assert keys - {"type", "request", "name"} <= set(LAUNCH_ATTRIBUTES)
