"""The house stays as built: parts import only the parts below them, and SQL
lives in the store and the object store alone (docs/architecture.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import rewind_daemon

PACKAGE = Path(rewind_daemon.__file__).parent

# Bottom to top. "base" is the package's own top-level modules (paths, config,
# errors, the store...), which everything may use and which use no part.
LAYERS = ["base", "checkpoints", "capture", "recorder", "timeline", "guard", "remote", "dap", "cli"]

# Where SQL may be written: the store owns the schema, the object store its pack.
SQL_HOMES = {"store.py", "checkpoints/objects.py"}
SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM"
    r"|CREATE\s+(TABLE|INDEX|UNIQUE)|ALTER\s+TABLE|DROP\s+TABLE|PRAGMA\s+\w+)\b",
)


def part_of(module: str) -> str:
    """The part a dotted module name (rewind_daemon.x.y) belongs to."""
    names = module.split(".")[1:]
    if names == ["__main__"]:
        return "cli"  # `python -m rewind_daemon` is the command line
    if len(names) >= 2 and names[0] in LAYERS:
        return names[0]
    if names and names[0] in LAYERS and (PACKAGE / names[0]).is_dir():
        return names[0]
    return "base"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    names = list(rel.parts)
    if names[-1] == "__init__":
        names.pop()
    return ".".join(names)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every rewind_daemon import in a file,
    including those inside functions."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import x` may name a submodule: count each name's own part
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if (PACKAGE.parent / sub.replace(".", "/")).is_dir() or (
                    PACKAGE.parent / (sub.replace(".", "/") + ".py")
                ).exists():
                    found.append((node.lineno, sub))
                else:
                    found.append((node.lineno, target))
    return [(line, m) for line, m in found if m.split(".")[0] == "rewind_daemon"]


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_part_imports_only_the_parts_below_it():
    wrong = []
    for path in sources():
        here = part_of(module_name(path))
        for line, target in imports(path):
            there = part_of(target)
            if LAYERS.index(there) > LAYERS.index(here):
                rel = path.relative_to(PACKAGE)
                wrong.append(f"{rel}:{line}: {here} imports {target} ({there} is above it)")
    assert not wrong, "\n".join(wrong)


def test_the_parts_are_the_folders_and_few_modules_stay_at_the_top():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert set(LAYERS[1:]) <= folders, folders
    top = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert len(top) <= 8, top


def test_sql_is_written_only_in_the_store_and_the_object_store():
    wrong = []
    for path in sources():
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in SQL_HOMES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if SQL.search(node.value):
                    wrong.append(f"{rel}:{node.lineno}: {node.value[:60]!r}")
    assert not wrong, "\n".join(wrong)


def test_the_checks_catch_what_they_are_for(tmp_path):
    """The rules above must be able to fail: an upward import and a SQL string
    in a part are seen."""
    assert part_of("rewind_daemon.cli.travel") == "cli"
    assert part_of("rewind_daemon.store") == "base"
    assert part_of("rewind_daemon.checkpoints.probes.dpkg") == "checkpoints"
    assert LAYERS.index(part_of("rewind_daemon.timeline.travel")) > LAYERS.index("capture")
    assert SQL.search("SELECT id FROM sessions WHERE name = ?")
    assert SQL.search("PRAGMA user_version")
    assert not SQL.search("select a session from the list")
