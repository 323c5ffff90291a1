"""The editor setups the README shows: the VS Code extension's launch
attributes are the adapter's, it packs into a .vsix with the real vsce (from
npm, offline) and its extension.js starts rw dap; the README's launch.json
launches."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

from rewind_daemon.dap.framing import Reader, encode
from rewind_daemon.dap.launching import LAUNCH_ATTRIBUTES

from ..conftest import RW
from .test_protocol import adapter  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parents[2]
VSCODE = ROOT / "editors" / "vscode"
VSCE = ROOT / "tests" / "dap" / "js" / "node_modules" / ".bin" / "vsce"


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


def package_the_extension(tmp_path: Path) -> Path:
    """editors/vscode, copied and packed by the real vsce with no network at
    all (a network namespace of its own): the .vsix."""
    # missing, it fails (never skips): scripts/test runs npm install in tests/dap/js
    assert VSCE.exists(), "vsce is not installed (scripts/test runs npm install in tests/dap/js)"
    src = tmp_path / "vscode"
    shutil.copytree(VSCODE, src)
    vsix = tmp_path / "rw-debug.vsix"
    # the project names no public repository: the one field vsce asks for that it lacks
    cmd = [str(VSCE), "package", "--allow-missing-repository", "--out", str(vsix)]
    proc = subprocess.run(
        ["unshare", "--net", "--map-root-user", *cmd],
        cwd=src, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said
    # nothing missing or doubtful in the manifest (a license, a README, ...)
    assert "WARNING" not in said and "ERROR" not in said, said
    return vsix


def test_the_extension_packs_into_a_vsix_that_vscode_can_install(tmp_path):
    vsix = package_the_extension(tmp_path)
    with zipfile.ZipFile(vsix) as z:
        names = set(z.namelist())
        assert {
            "extension.vsixmanifest", "[Content_Types].xml", "extension/package.json",
            "extension/extension.js", "extension/readme.md", "extension/LICENSE.txt",
        } == names  # fmt: skip
        manifest = json.loads(z.read("extension/package.json"))
        assert z.read("extension/extension.js") == (VSCODE / "extension.js").read_bytes()
        assert "MIT License" in z.read("extension/LICENSE.txt").decode()
        vsixmanifest = z.read("extension.vsixmanifest").decode()
    # what VS Code reads to install and activate it
    assert re.fullmatch(r"\^\d+\.\d+\.\d+", manifest["engines"]["vscode"])
    assert "extension/" + manifest["main"].removeprefix("./") in names
    assert {"onDebugResolve:rw", "onDebugDynamicConfigurations:rw"} <= set(
        manifest["activationEvents"]
    )
    (debugger,) = manifest["contributes"]["debuggers"]
    assert debugger["type"] == "rw" and debugger["languages"] == ["shellscript"]
    assert sorted(debugger["configurationAttributes"]["launch"]["properties"]) == sorted(
        LAUNCH_ATTRIBUTES
    )
    assert manifest["contributes"]["breakpoints"] == [{"language": "shellscript"}]
    assert manifest["capabilities"]["untrustedWorkspaces"]["supported"] is False
    assert manifest["license"] == "MIT"
    assert '<Identity Language="en-US" Id="rw-debug" Version="0.1.0" Publisher="rw"' in (
        vsixmanifest
    )
    assert re.search(
        r'<Property Id="Microsoft.VisualStudio.Code.Engine" Value="\^1\.\d+\.\d+"', vsixmanifest
    )
    assert 'Path="extension/LICENSE.txt"' in vsixmanifest


# extension.js as VS Code runs it: a `vscode` module with the calls it makes;
# prints the adapter it describes for a debug session.
HOST = r"""
const Module = require('module');
const settings = JSON.parse(process.env.SETTINGS);
let factory = null;
const vscode = {
  workspace: { getConfiguration: (section) => ({ get: (key) => settings[`${section}.${key}`] }) },
  debug: {
    registerDebugAdapterDescriptorFactory(type, f) {
      if (type === 'rw') factory = f;
      return { dispose() {} };
    },
  },
  DebugAdapterExecutable: class {
    constructor(command, args, options) { Object.assign(this, { command, args, options }); }
  },
};
const load = Module._load;
Module._load = function (request, ...rest) {
  return request === 'vscode' ? vscode : load.call(this, request, ...rest);
};
const extension = require(process.argv[1]);
const context = { subscriptions: [] };
extension.activate(context);
const session = { type: 'rw', configuration: { type: 'rw', request: 'launch' } };
const d = factory.createDebugAdapterDescriptor(session, undefined);
const described = { subscriptions: context.subscriptions.length, command: d.command, args: d.args };
console.log(JSON.stringify(described));
"""


def test_the_packaged_extension_starts_rw_dap_from_its_setting_or_path(tmp_path, rw_home):
    vsix = package_the_extension(tmp_path)
    with zipfile.ZipFile(vsix) as z:
        z.extractall(tmp_path / "installed")
    extension = tmp_path / "installed" / "extension" / "extension.js"
    home = tmp_path / "home"
    (home / "tools").mkdir(parents=True)
    (home / "tools" / "rw").symlink_to(RW)
    on_path = tmp_path / "bin"
    on_path.mkdir()
    (on_path / "rw").symlink_to(RW)
    env = dict(os.environ, HOME=str(home), PATH=f"{on_path}:/usr/bin:/bin", RW_HOME=str(rw_home))

    def adapter_for(settings: dict) -> list[str]:
        proc = subprocess.run(
            ["node", "-e", HOST, str(extension)], capture_output=True, text=True, timeout=30,
            env=dict(env, SETTINGS=json.dumps(settings)),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        described = json.loads(proc.stdout)
        assert described["subscriptions"] == 1  # disposed with the extension
        return [described["command"], *described["args"]]

    assert adapter_for({}) == ["rw", "dap"]
    assert adapter_for({"rw.path": "  "}) == ["rw", "dap"]
    assert adapter_for({"rw.path": "~/tools/rw"}) == [str(home / "tools" / "rw"), "dap"]
    assert adapter_for({"rw.path": RW}) == [RW, "dap"]
    # each one found as VS Code finds it (on PATH, else the path) is rw's adapter
    for settings in ({}, {"rw.path": "~/tools/rw"}):
        command = adapter_for(settings)
        proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        assert proc.stdin and proc.stdout
        proc.stdin.write(encode({"seq": 1, "type": "request", "command": "initialize",
                                 "arguments": {"adapterID": "rw"}}))  # fmt: skip
        proc.stdin.flush()
        reply = Reader(proc.stdout).read()  # type: ignore[arg-type]
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
        assert reply and reply["command"] == "initialize" and reply["success"], reply
        assert reply["body"]["supportsStepBack"] is True
