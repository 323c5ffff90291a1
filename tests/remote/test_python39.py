"""What runs on a remote must run under Python 3.9 (the oldest rw supports
there). No 3.9 interpreter is installed here, so this is checked on the code:
the agent is run here from the bundle as it runs there (a guarded run that
halts and rolls back, --attach, rw pull), the modules it loaded from the
bundle are taken from sys.modules, and each must read as Python 3.9 and use no
syntax at run time or standard library name, keyword or module that came
after 3.9 (outside a `sys.version_info` or ImportError guard)."""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from rewind_daemon.remote import wire
from rewind_daemon.remote.bundle import bundle

# module -> names it gained after 3.9 (a name used as module.name or imported)
NEW_NAMES = {
    "itertools": {"pairwise", "batched"},
    "typing": {
        "TypeAlias",
        "ParamSpec",
        "Concatenate",
        "TypeGuard",
        "Self",
        "LiteralString",
        "Never",
        "assert_never",
        "assert_type",
        "reveal_type",
        "Required",
        "NotRequired",
        "Unpack",
        "TypeVarTuple",
        "dataclass_transform",
        "override",
        "is_typeddict",
        "get_overloads",
        "clear_overloads",
        "TypeIs",
        "ReadOnly",
    },
    "types": {"UnionType", "NoneType", "EllipsisType"},
    "datetime": {"UTC"},
    "enum": {
        "StrEnum",
        "ReprEnum",
        "verify",
        "member",
        "nonmember",
        "global_enum",
        "EnumCheck",
        "FlagBoundary",
        "property",
    },
    "hashlib": {"file_digest"},
    "contextlib": {"chdir", "aclosing"},
    "os": {
        "eventfd",
        "eventfd_read",
        "eventfd_write",
        "splice",
        "EFD_CLOEXEC",
        "EFD_NONBLOCK",
        "EFD_SEMAPHORE",
        "process_cpu_count",
        "login_tty",
        "grantpt",
        "unlockpt",
        "ptsname",
        "posix_openpt",
        "setns",
        "unshare",
        "pidfd_open_flags",
    },
    "sys": {
        "orig_argv",
        "stdlib_module_names",
        "exception",
        "activate_stack_trampoline",
        "_is_gil_enabled",
    },
    "inspect": {"get_annotations", "markcoroutinefunction"},
    "dataclasses": {"KW_ONLY"},
    "asyncio": {"TaskGroup", "timeout", "Runner", "Barrier"},
    "operator": {"call"},
    "math": {"cbrt", "exp2", "sumprod", "fma"},
    "re": {"NOFLAG"},
    "logging": {"getLevelNamesMapping", "getHandlerByName", "getHandlerNames"},
    "fcntl": {"F_GETPIPE_SZ", "F_SETPIPE_SZ", "F_DUP2FD", "F_DUP2FD_CLOEXEC"},
    "statistics": {"correlation", "covariance", "linear_regression", "fmean_weights"},
    "tomllib": {"*"},
    "builtins": {"aiter", "anext", "EncodingWarning", "ExceptionGroup", "BaseExceptionGroup"},
    "termios": {"tcgetwinsize", "tcsetwinsize"},
    "sqlite3": {"Blob", "SQLITE_DBCONFIG_DEFENSIVE"},
    "signal": {"SIGSTKFLT"},
}
BUILTINS = NEW_NAMES["builtins"]
# method names that are only 3.10+ wherever they are (none is a name rw gives its own)
NEW_METHODS = {"bit_count", "hardlink_to", "add_note", "is_junction", "with_segments",
               "full_match", "getLevelNamesMapping", "setlimit", "getlimit", "serialize",
               "deserialize", "blobopen"}  # fmt: skip
# callable (last dotted name) -> keywords it gained after 3.9
NEW_KEYWORDS = {
    "zip": {"strict"},
    "dataclass": {"slots", "kw_only", "match_args", "weakref_slot"},
    "field": {"kw_only"},
    "bisect": {"key"}, "bisect_left": {"key"}, "bisect_right": {"key"},
    "insort": {"key"}, "insort_left": {"key"}, "insort_right": {"key"},
    "Popen": {"pipesize", "process_group"}, "run": {"pipesize", "process_group"},
    "check_output": {"pipesize", "process_group"}, "call": {"pipesize", "process_group"},
    "glob": {"root_dir", "dir_fd", "include_hidden"},
    "iglob": {"root_dir", "dir_fd", "include_hidden"},
    "rmtree": {"onexc"},
    "NamedTemporaryFile": {"delete_on_close"},
    "exists": {"follow_symlinks"},  # (Path's; DirEntry.is_dir's is old)
    "TemporaryDirectory": {"delete"}, "connect": {"autocommit"},
}  # fmt: skip


def _guarded(parents: list[ast.AST]) -> bool:
    """Inside `if sys.version_info >= ...` or the body of a try that catches
    ImportError/AttributeError: written for other Pythons on purpose."""
    for node in parents:
        if isinstance(node, ast.If) and "version_info" in ast.unparse(node.test):
            return True
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
        if isinstance(node, ast.Try):
            caught = " ".join(ast.unparse(h.type) for h in node.handlers if h.type is not None)
            if "ImportError" in caught or "AttributeError" in caught:
                return True
    return False


def _runtime_union(node: ast.AST) -> bool:
    """`A | B` between types, evaluated when it runs (3.10+)."""
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)):
        return False

    def typeish(n: ast.AST) -> bool:
        if isinstance(n, ast.Constant):
            return n.value is None
        if isinstance(n, ast.Subscript):
            return True
        if isinstance(n, ast.Name):
            return n.id[:1].isupper() or n.id in {
                "int",
                "str",
                "bytes",
                "float",
                "bool",
                "list",
                "dict",
                "tuple",
                "set",
                "object",
            }
        if isinstance(n, ast.BinOp):
            return _runtime_union(n)
        return False

    return typeish(node.left) and typeish(node.right)


def problems(source: bytes, name: str) -> list[str]:
    """What in a module would not run under Python 3.9."""
    try:
        tree = ast.parse(source, name, feature_version=(3, 9))
    except SyntaxError as e:
        return [f"{name}:{e.lineno}: not Python 3.9 syntax: {e.msg}"]
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                 and any(a.name == "annotations" for a in n.names)
                 for n in tree.body)  # fmt: skip
    modules: dict[str, str] = {}  # local name -> module
    found: list[str] = []

    def say(node: ast.AST, what: str) -> None:
        found.append(f"{name}:{getattr(node, 'lineno', 0)}: {what}")

    def walk(node: ast.AST, parents: list[ast.AST], annotation: bool) -> None:
        guarded = _guarded(parents)
        if isinstance(node, ast.Import):
            for a in node.names:
                modules[a.asname or a.name] = a.name
                if a.name in ("tomllib",) and not guarded:
                    say(node, f"imports {a.name} (3.11)")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            new = NEW_NAMES.get(node.module, set())
            for a in node.names:
                if (a.name in new or "*" in new) and not guarded:
                    say(node, f"from {node.module} import {a.name} (after 3.9)")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = modules.get(node.value.id)
            if module is not None and node.attr in NEW_NAMES.get(module, set()) and not guarded:
                say(node, f"{module}.{node.attr} (after 3.9)")
        elif isinstance(node, ast.Name) and node.id in BUILTINS and not guarded:
            say(node, f"{node.id} (after 3.9)")
        elif isinstance(node, ast.Call) and not guarded:
            f = node.func
            callee = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if isinstance(f, ast.Attribute) and f.attr in NEW_METHODS:
                say(node, f".{f.attr}() (after 3.9)")
            for kw in node.keywords:
                if kw.arg in NEW_KEYWORDS.get(callee, set()):
                    say(node, f"{callee}({kw.arg}=...) (after 3.9)")
                if (
                    kw.arg == "encoding"
                    and isinstance(kw.value, ast.Constant)
                    and (kw.value.value == "locale")
                ):
                    say(node, 'encoding="locale" (3.10)')
        elif isinstance(node, ast.Match):
            say(node, "match statement (3.10)")
        if _runtime_union(node) and not annotation and not guarded:
            say(node, "`A | B` of types at run time (3.10)")
        if annotation and not future and isinstance(node, ast.BinOp):
            say(node, "`A | B` in an annotation without `from __future__ import annotations`")
        for fieldname, value in ast.iter_fields(node):
            is_annotation = annotation or fieldname in ("annotation", "returns")
            children = value if isinstance(value, list) else [value]
            for child in children:
                if isinstance(child, ast.AST):
                    walk(child, [*parents, node], is_annotation)

    walk(tree, [], False)
    return found


def test_the_checker_finds_what_3_9_lacks():
    bad = {
        "match x:\n    case 1: pass\n": "not Python 3.9 syntax",
        "import itertools\nitertools.pairwise([])\n": "itertools.pairwise",
        "from typing import TypeAlias\n": "from typing import TypeAlias",
        "import tomllib\n": "imports tomllib",
        "zip(a, b, strict=True)\n": "zip(strict=...)",
        "from dataclasses import dataclass\n@dataclass(slots=True)\nclass A: pass\n": "slots",
        "isinstance(x, int | None)\n": "`A | B` of types at run time",
        "Alias = dict[str, int] | None\n": "`A | B` of types at run time",
        "def f(x: int | None): pass\n": "without `from __future__ import annotations`",
        "n.bit_count()\n": ".bit_count()",
        "subprocess.Popen(['x'], process_group=0)\n": "Popen(process_group=...)",
        "open('f', encoding='locale')\n": 'encoding="locale"',
        "anext(it)\n": "anext",
    }
    for source, what in bad.items():
        found = problems(source.encode(), "m.py")
        assert any(what in p for p in found), (source, found)
    good = (
        "from __future__ import annotations\ndef f(x: int | None) -> list[str] | None: pass\n"
        "import sys\nif sys.version_info >= (3, 11):\n    import tomllib\nelse:\n"
        "    import tomli as tomllib\nflags = 1 | 2\nx = a | b\n"
    )
    assert problems(good.encode(), "m.py") == []


def _agent_run(lib: Path, home: Path, frames: list[bytes], loaded: Path) -> bytes:
    """rw's remote side, run here as the bootstrap runs it there (python -I, the
    bundle's files first on sys.path, a user with no rw settings but HOME), with
    `frames` on its stdin; the modules it loaded are written to `loaded`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RW_", "XDG_"))}
    code = (
        "import sys, json\n"
        f"sys.path.insert(0, {str(lib)!r})\n"
        "from rewind_daemon.remote import agent\n"
        f"code = agent.main(sys.stdin.buffer, sys.stdout.buffer, {str(lib)!r})\n"
        "files = {n: getattr(m, '__file__', None) for n, m in list(sys.modules.items())}\n"
        f"open({str(loaded)!r}, 'w').write(json.dumps(files))\n"
        "sys.stdout.flush()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", code], input=b"".join(frames), capture_output=True,
        timeout=120, env={**clean, "HOME": str(home)},
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr.decode()
    return proc.stdout


def _session_id(out: bytes) -> str:
    frames = wire.Parser().feed(out)
    [run] = [json.loads(p) for k, p in frames if k == wire.SESSION]
    return run["session"]["id"]


@pytest.mark.slow
def test_what_the_agent_loads_runs_under_python_3_9(rw_home, tmp_path):
    from rewind_daemon.config import Config
    from rewind_daemon.guard.runner import GuardRequest
    from rewind_daemon.remote.agent import config_to_wire

    lib = tmp_path / "lib"
    zipfile.ZipFile(io.BytesIO(bundle().data)).extractall(lib)
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.conf").write_text("x=1\n")
    request = GuardRequest(
        ["sh", "-c", f"echo x=2 > {site}/a.conf; echo 'WARNING: changed'; sleep 5"],
        "~", [str(site)], packages=True, services=True,
    )  # fmt: skip
    ask = {"request": request.to_json(), "config": config_to_wire(Config()), "size": [24, 80],
           "input": "pipe"}  # fmt: skip
    there = tmp_path / "there"
    there.mkdir()
    loaded: dict[str, str | None] = {}
    out = _agent_run(lib, there, [wire.json_frame(wire.REQUEST, ask),
                                  wire.frame(wire.INPUT, b"y\n"), wire.json_frame(wire.EOF, {})],
                     tmp_path / "m1.json")  # fmt: skip
    assert b"WARNING: changed" in out and (site / "a.conf").read_text() == "x=1\n"
    loaded.update(json.loads((tmp_path / "m1.json").read_text()))
    sid = _session_id(out)
    for n, ask2 in enumerate(({"attach": True}, {"pull": None}, {"pull": sid[:12]})):
        frames = [wire.json_frame(wire.REQUEST, ask2), wire.json_frame(wire.ACK, {"session": sid})]
        out = _agent_run(lib, there, frames, tmp_path / f"m{n}.json")
        assert out, ask2
        loaded.update(json.loads((tmp_path / f"m{n}.json").read_text()))

    ours = sorted(
        (name, Path(f)) for name, f in loaded.items() if f and Path(f).is_relative_to(lib)
    )
    names = {n for n, _ in ours}
    # what a guarded run needs, and no more: never click (3.10+), the CLI's
    assert {"rewind_daemon.remote.agent", "rewind_daemon.guard.runner",
            "rewind_daemon.checkpoints.objects", "rewind_daemon.store",
            "platformdirs"} <= names, names  # fmt: skip
    assert not [n for n in names if n == "click" or n.startswith(("click.", "rewind_daemon.cli"))]
    found = [p for _, path in ours for p in problems(path.read_bytes(), str(path.relative_to(lib)))]
    assert found == [], "\n".join(found)
