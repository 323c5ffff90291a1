"""The launch request: its arguments checked, and the debugger made from them
(on the engine thread: the store, a recorded session's steps, the watched
paths, the recording)."""

from __future__ import annotations

import os
from collections.abc import Callable

from .. import paths
from ..checkpoints.checkpoint import Checkpoints, Watch, normalise, watches
from ..config import load as load_config
from ..errors import RwError
from ..store import Store
from . import recorded, script
from .recording import Recording
from .runtime import Debugger, Launch


class LaunchError(RwError):
    """A launch that cannot be done: the error response says why."""


# The launch request's own arguments (editors add their own: type, name, ...).
LAUNCH_ATTRIBUTES = ("program", "session", "args", "cwd", "env", "shell", "stopOnEntry", "watch")


def launch_arguments(args: dict) -> tuple[Launch, dict[str, str | None]]:
    """The launch request's arguments, checked (a LaunchError says what is
    wrong), and the environment changes it asks for."""
    program, session = args.get("program"), args.get("session")
    if (program is None) == (session is None):
        raise LaunchError("launch: say what to debug: a script (program) or a session")
    cwd = args.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not os.path.isdir(cwd)):
        raise LaunchError(f"launch: cwd {cwd!r} is not a directory")
    shell = args.get("shell")
    if shell is not None and shell not in ("bash", "zsh"):
        raise LaunchError(f"launch: shell must be bash or zsh, not {shell!r}")
    extra = args.get("env") or {}
    if not isinstance(extra, dict) or not all(
        isinstance(v, str) or v is None for v in extra.values()
    ):
        raise LaunchError("launch: env must be an object of names and values (or null)")
    argv = args.get("args") or []
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise LaunchError("launch: args must be a list of strings")
    watch = args.get("watch")
    if watch is not None and (
        not isinstance(watch, list) or not all(isinstance(w, str) for w in watch)
    ):
        raise LaunchError("launch: watch must be a list of paths")
    base = cwd or os.getcwd()
    watched = None if watch is None else [Watch(normalise(os.path.join(base, w))) for w in watch]
    if session is not None:
        if not isinstance(session, str) or not session:
            raise LaunchError("launch: session must be a session's name, id or last")
        launch = Launch("", [], shell or "", cwd or "", {}, argv, watched, session=session)
        return launch, extra
    if not isinstance(program, str) or not program:
        raise LaunchError("launch: say which script to debug (program)")
    path = os.path.abspath(os.path.join(base, os.path.expanduser(program)))
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "surrogateescape")
    except OSError as e:
        raise LaunchError(f"launch: cannot read {path}: {e.strerror}") from None
    if shell is None:
        first = text.split("\n", 1)[0]
        shell = "zsh" if first.startswith("#!") and "zsh" in first else "bash"
    try:
        steps = script.split(text, shell)
    except script.ScriptError as e:
        raise LaunchError(f"launch: {path}: {e}") from None
    launch = Launch(path, steps, shell, base, dict(os.environ), argv, watched)
    launch.text = text
    return launch, extra


def _with(env: dict[str, str], extra: dict[str, str | None]) -> dict[str, str]:
    out = dict(env)
    for name, value in extra.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def make_debugger(
    launch: Launch, extra_env: dict[str, str | None], on_output: Callable[[str, str], None]
) -> Debugger:
    """On the engine thread: the store, the session's steps when one is debugged,
    and the debugger."""
    p = paths.resolve()
    config = load_config(p.config_file)
    try:
        store: Store | None = Store(p.db)
    except RwError as e:
        if launch.session is not None or launch.watch:
            raise
        # a script can be debugged without the store: unrecorded, no files watched
        on_output("stderr", f"rw dap: this run is not recorded: {e}\n")
        store, launch.watch = None, []
    name = parent = None
    if launch.session is not None:
        assert store is not None
        prog = recorded.load(store, p, launch.session, dict(os.environ))
        if prog.notice:
            on_output("console", prog.notice)
        name, parent = prog.name, prog.session
        launch.path, launch.text, launch.steps = prog.path, prog.text, prog.steps
        launch.shell = launch.shell or prog.shell
        launch.cwd = launch.cwd or prog.cwd
        launch.env, launch.refused, launch.cwds = prog.env, prog.refused, prog.cwds
        launch.numbers, launch.stored = prog.numbers, prog.stored
    launch.env = _with(launch.env, extra_env)
    if launch.watch is None:  # the configured watched paths
        launch.watch = [w for w in watches(store, config) if os.path.isdir(w.path)]
    for w in launch.watch:
        if not os.path.isdir(w.path):
            raise LaunchError(f"launch: watch {w.path} is not a directory")
    checkpoints = Checkpoints(p, store, config) if launch.watch and store else None
    debugger = Debugger(launch, checkpoints, on_output)
    if store is not None:  # once the shell has started: no session is left for nothing
        debugger.recording = Recording(
            store, config, launch.path, launch.shell, launch.cwd, parent, name
        )
    return debugger
