"""The editor setups the README shows: the VS Code extension's launch
attributes are the adapter's, it packs into a .vsix with the real vsce (from
npm, offline) and its extension.js starts rw dap; the README's launch.json
launches."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import zipfile
from pathlib import Path

from rewind_daemon.dap.framing import Reader, encode
from rewind_daemon.dap.launching import LAUNCH_ATTRIBUTES

from ..conftest import RW
from .test_protocol import (
    Server,
    adapter,  # noqa: F401  (the fixture)
)

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


def lua_table(text: str):
    """A Lua table constructor of strings, numbers and tables (what nvim-dap's
    setup holds), as a dict, or a list when it has no keys."""
    tokens = re.findall(r"'(?:[^'\\]|\\.)*'|\d+|\w+|[{}=,]", text)
    pos = 0

    def value():
        nonlocal pos
        token = tokens[pos]
        pos += 1
        if token == "{":
            items, keyed = [], {}
            while tokens[pos] != "}":
                if tokens[pos + 1] == "=":
                    key = tokens[pos]
                    pos += 2
                    keyed[key] = value()
                else:
                    items.append(value())
                if tokens[pos] == ",":
                    pos += 1
            pos += 1
            assert not (items and keyed), text
            return keyed if keyed or not items else items
        if token.startswith("'"):
            return token[1:-1]
        assert token.isdigit(), token
        return int(token)

    result = value()
    assert pos == len(tokens), text
    return result


def nvim_dap_setup() -> tuple[list[dict], list[dict]]:
    """The README's nvim-dap adapters (the one in a comment too) and configurations."""
    lua = re.search(r"```lua\n(.*?)```", readme_section(), re.S)
    assert lua
    adapters = [
        lua_table(m.group(1))
        for m in re.finditer(r"^(?:-- )?dap\.adapters\.rw = (\{.*\})$", lua.group(1), re.M)
    ]
    configurations = re.search(r"^dap\.configurations\.sh = (\{.*?^\})$", lua.group(1), re.M | re.S)
    assert configurations
    return adapters, lua_table(configurations.group(1))


def test_the_readmes_nvim_dap_adapters_and_configuration_debug_a_script(rw_home, tmp_path):
    """As nvim-dap does: the executable adapter started as it says, the server
    adapter reached where it says (a server started on a free port stands for
    `rw dap --port 4711`), and the configuration, its variables filled in,
    launched on each."""
    adapters, configurations = nvim_dap_setup()
    assert [a["type"] for a in adapters] == ["executable", "server"]
    executable, server = adapters
    assert executable == {"type": "executable", "command": "rw", "args": ["dap"]}
    assert server == {"type": "server", "host": "127.0.0.1", "port": 4711}
    (config,) = configurations
    assert config["type"] == "rw" and config["request"] == "launch"
    assert set(config) - {"type", "request", "name"} <= set(LAUNCH_ATTRIBUTES)
    script = tmp_path / "deploy.sh"
    script.write_text('echo "deploying from $(basename "$PWD")"\n')
    filled = {"${file}": str(script), "${workspaceFolder}": str(tmp_path)}
    launch = {
        k: filled.get(v, v) for k, v in config.items() if k not in ("type", "request", "name")
    }
    on_path = tmp_path / "bin"
    on_path.mkdir()
    (on_path / "rw").symlink_to(RW)
    env = dict(os.environ, PATH=f"{on_path}:{os.environ['PATH']}", RW_HOME=str(rw_home))

    def debug(send, reader) -> list[str]:
        seq = 0

        def ask(command: str, **args) -> None:
            nonlocal seq
            seq += 1
            send(encode({"seq": seq, "type": "request", "command": command, "arguments": args}))

        ask("initialize", adapterID="rw", clientID="neovim", linesStartAt1=True)
        ask("launch", **launch)
        ask("configurationDone")
        said, failed = [], []
        while True:
            m = reader.read()
            assert m is not None, "the adapter ended"
            if m.get("type") == "response" and not m["success"]:
                failed.append(m)
            if m.get("event") == "stopped":
                ask("continue", threadId=1)
            if m.get("event") == "output" and m["body"].get("category") == "stdout":
                said.append(m["body"]["output"])
            if m.get("event") == "terminated":
                assert not failed, failed
                return said

    signal.alarm(60)
    proc = None
    try:
        proc = subprocess.Popen(
            [executable["command"], *executable["args"]], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, cwd=tmp_path, start_new_session=True,
        )  # fmt: skip
        assert proc.stdin and proc.stdout
        stdin = proc.stdin

        def send_stdin(data: bytes) -> None:
            stdin.write(data)
            stdin.flush()

        said = debug(send_stdin, Reader(proc.stdout))  # type: ignore[arg-type]
        assert said == [f"deploying from {tmp_path.name}\n"]
        stdin.close()
        assert proc.wait(timeout=20) == 0
        listening = Server(env)
        try:
            assert listening.host == server["host"]
            sock = socket.create_connection((server["host"], listening.port), timeout=20)
            said = debug(sock.sendall, Reader(sock.makefile("rb")))  # type: ignore[arg-type]
            assert said == [f"deploying from {tmp_path.name}\n"]
            sock.close()
        finally:
            listening.close()
    finally:
        signal.alarm(0)
        if proc:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


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
