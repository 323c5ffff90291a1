"""One debug session: DAP requests in, runtime calls made, DAP responses and
events out. It only translates: what runs, stops and goes back is the
runtime's (runtime.py).

Every runtime call is made on one engine thread (the store's connection and
the executor's pipes belong to one thread), so a request is answered at once
and a run's end is told by an event; `pause`, `terminate` and `disconnect`
reach a running step by signal.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import RwError
from ..timeline.executor import ShellGone
from . import script
from .framing import FramingError, Reader, Writer
from .launching import launch_arguments, make_debugger
from .runtime import (
    FAILED,
    OUTPUT,
    Debugger,
    Ended,
    FunctionBreakpoint,
    LineBreakpoint,
    Outcome,
    Stopped,
    check_hit_condition,
)

THREAD = 1
TOP = 1  # the frame of the step about to run; those run below it are 1000 + k
SOURCING = 2  # in a sourced script: the program's step that sources it, below TOP
ENVIRONMENT, SHELL, STEP, CHECKPOINT = 1, 2, 3, 4  # scopes: reference = frame * 8 + scope

CAPABILITIES: dict[str, Any] = {
    "supportsConfigurationDoneRequest": True,
    "supportsStepBack": True,
    "supportsConditionalBreakpoints": True,
    "supportsHitConditionalBreakpoints": True,
    "supportsLogPoints": True,
    "supportsFunctionBreakpoints": True,
    "supportsEvaluateForHovers": True,
    "supportsSetVariable": True,
    "supportsGotoTargetsRequest": True,
    "supportsRestartRequest": True,
    "supportsTerminateRequest": True,
    "supportsExceptionInfoRequest": True,
    "supportsCompletionsRequest": True,
    "supportsExceptionFilterOptions": True,
    "exceptionBreakpointFilters": [
        {"filter": FAILED, "label": "Failed command",
         "description": "Stop after a step that exits with a status other than 0",
         "default": False},
        {"filter": OUTPUT, "label": "Output matches",
         "description": "Stop after a step whose output matches a regular expression",
         "default": False, "supportsCondition": True,
         "conditionDescription": "a regular expression (Python's), e.g. ERROR|WARN"},
    ],
}  # fmt: skip

# What may come before a launch, and what needs one.
BEFORE_LAUNCH = {"initialize", "launch", "disconnect", "terminate", "threads",
                 "setExceptionBreakpoints", "setBreakpoints", "setFunctionBreakpoints",
                 "configurationDone"}  # fmt: skip


class RequestError(RwError):
    """A request that cannot be done: an error response with this message."""


class DebugSession:
    def __init__(self, reader: Reader, writer: Writer):
        self.reader, self.writer = reader, writer
        self.engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rw-dap-engine")
        self.debugger: Debugger | None = None
        self.initialized = False
        self.configured = False
        self.stop_on_entry = True
        self.running = False  # a run is under way on the engine thread
        self.done = False
        self.program = ""
        self.source: dict[str, Any] = {}
        self.next_bp_id = 1
        self.pending_lines: list[dict] = []  # setBreakpoints before launch
        self.filters: set[str] = set()
        self.output_regex: str | None = None
        self.function_points: list[FunctionBreakpoint] | None = None
        self.request: dict = {}
        self.text = ""
        self.columns_at_1 = True

    # --- the loop ----------------------------------------------------------

    def serve(self) -> None:
        try:
            while not self.done:
                try:
                    message = self.reader.read()
                except FramingError as e:
                    self.event("output", {"category": "stderr", "output": f"rw dap: {e}\n"})
                    continue
                except (OSError, ValueError):
                    break
                if message is None:
                    break
                self.dispatch(message)
        finally:
            self._shut_down()

    def dispatch(self, message: dict) -> None:
        if message.get("type") != "request" or not isinstance(message.get("command"), str):
            self.on_output("stderr", "rw dap: a message that is not a request (skipped)\n")
            return
        command = message["command"]
        args = message.get("arguments") or {}
        self.request = message
        handler = getattr(self, f"request_{command}", None)
        try:
            if not isinstance(args, dict):
                raise RequestError(f"{command}: its arguments are not an object")
            if handler is None:
                raise RequestError(f"rw dap does not know the request {command!r}")
            if command != "initialize" and not self.initialized:
                raise RequestError(f"{command} before initialize")
            if command not in BEFORE_LAUNCH and self.debugger is None:
                raise RequestError(f"{command} before launch")
            body = handler(args)
        except RwError as e:
            self.respond(message, None, str(e))
            return
        except Exception as e:  # a bug must not end the session: say it, go on
            self.respond(message, None, f"rw dap: internal error in {command}: {e!r}")
            return
        if body is not _RESPONDED:
            self.respond(message, body)

    def respond(self, request: dict, body: dict | None, error: str | None = None) -> None:
        out: dict[str, Any] = {
            "type": "response",
            "request_seq": request.get("seq", 0),
            "command": request.get("command", ""),
            "success": error is None,
        }
        if error is not None:
            out["message"] = error
            out["body"] = {"error": {"id": 1, "format": error, "showUser": True}}
        elif body:
            out["body"] = body
        self.writer.send(out)

    def event(self, name: str, body: dict | None = None) -> None:
        self.writer.send({"type": "event", "event": name, **({"body": body} if body else {})})

    def on_output(self, category: str, text: str) -> None:
        if text:
            self.event("output", {"category": category, "output": text})

    # --- the engine thread -------------------------------------------------

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the engine thread and wait for it (RwError passes)."""
        if self.running:
            raise RequestError("the program is running; pause it first")
        return self.engine.submit(fn).result()

    def start(self, op: Callable[[Debugger], Outcome]) -> object:
        """Answer the request, then run `op` on the engine thread; its outcome is
        told by a stopped, or exited and terminated, event."""
        if self.running:
            raise RequestError("the program is running; pause it first")
        debugger = self._debugger()
        if debugger.ended:
            raise RequestError("the program has ended")
        self.running = True
        self.respond(self.request, None)
        self.engine.submit(self._run, op, debugger)
        return _RESPONDED

    def _run(self, op: Callable[[Debugger], Outcome], debugger: Debugger) -> None:
        """On the engine thread: the run, then its outcome told."""
        try:
            outcome = op(debugger)
        except ShellGone:  # the shell ended between steps (killed): with its status
            code = debugger.ex.proc.wait()
            outcome = Ended(128 - code if code < 0 else code)
        except RwError as e:
            self.on_output("stderr", f"rw dap: {e}\n")
            outcome = Stopped("exception", str(e))
        except Exception as e:
            self.on_output("stderr", f"rw dap: internal error: {e!r}\n")
            outcome = Stopped("exception", "internal error")
        self.running = False
        if isinstance(outcome, Ended) and self.debugger is not None:
            self.debugger.close()  # on the engine thread: what the script left running ends
        self.tell(outcome)
        if self.debugger is not None:
            self.debugger.flush()  # the run's record, written once the stop is told

    def tell(self, outcome: Outcome) -> None:
        if isinstance(outcome, Ended):
            self.event("exited", {"exitCode": outcome.exit_code})
            self.event("terminated")
            return
        body: dict[str, Any] = {"reason": outcome.reason, "threadId": THREAD,
                                "allThreadsStopped": True}  # fmt: skip
        if outcome.description:
            body["description"] = outcome.description
            if outcome.reason == "exception":
                body["text"] = outcome.description
        ids = [i for i in outcome.breakpoints if i]  # 0: a stored one (rw breakpoint)
        if ids:
            body["hitBreakpointIds"] = ids
        self.event("stopped", body)

    def _debugger(self) -> Debugger:
        if self.debugger is None:
            raise RequestError("no program launched")
        return self.debugger

    def kill(self) -> None:
        """End the program's shell now (from any thread)."""
        if self.debugger is not None:
            self.debugger.kill()

    def _shut_down(self) -> None:
        self.done = True
        if self.debugger is not None:
            self.debugger.kill()
            debugger = self.debugger
            self.engine.submit(debugger.close).result()
        self.engine.shutdown(wait=True)

    # --- starting ------------------------------------------------------------

    def request_initialize(self, args: dict) -> dict:
        if self.initialized:
            raise RequestError("initialize was sent twice")
        self.initialized = True
        self.columns_at_1 = args.get("columnsStartAt1", True) is not False
        return CAPABILITIES

    def request_launch(self, args: dict) -> object:
        if self.debugger is not None:
            raise RequestError("a program is already launched in this session")
        if not isinstance(args.get("stopOnEntry", True), bool):
            raise RequestError("launch: stopOnEntry must be true or false")
        if not isinstance(args.get("noDebug", False), bool):
            raise RequestError("launch: noDebug must be true or false")
        launch, extra_env = launch_arguments(args)
        no_debug = args.get("noDebug", False)  # the editor's "Run Without Debugging"
        self.stop_on_entry = args.get("stopOnEntry", True) and not no_debug
        self.debugger = self.engine.submit(
            make_debugger, launch, extra_env, self.on_output
        ).result()
        self.debugger.no_debug = no_debug
        self.program = launch.path
        self.source = {"name": os.path.basename(launch.path), "path": launch.path}
        self.text = launch.text
        self._apply_filters()
        self.respond(self.request, None)
        for pending in self.pending_lines:
            for changed in self._set_lines(pending):
                self.event("breakpoint", {"reason": "changed", "breakpoint": changed})
        self.pending_lines = []
        recording = self.debugger.recording
        if recording is not None:
            self.on_output("console", f"rw dap: this run is recorded as session {recording.id} "
                           f"({recording.name})\n")  # fmt: skip
        self.event("initialized")  # now breakpoints can be set in the program
        return _RESPONDED

    def request_configurationDone(self, args: dict) -> object:
        debugger = self._debugger()
        if self.configured:
            raise RequestError("configurationDone was sent twice")
        self.configured = True
        if self.stop_on_entry and debugger.steps:
            self.respond(self.request, None)
            self.tell(Stopped("entry"))
            return _RESPONDED
        return self.start(Debugger.run)

    # --- breakpoints ---------------------------------------------------------

    def request_setBreakpoints(self, args: dict) -> dict:
        source = args.get("source") or {}
        wanted = args.get("breakpoints")
        if wanted is None:
            wanted = [{"line": n} for n in args.get("lines") or []]
        if not isinstance(wanted, list) or not all(
            isinstance(b, dict) and isinstance(b.get("line"), int) for b in wanted
        ):
            raise RequestError("setBreakpoints: each breakpoint needs a line number")
        ids = list(range(self.next_bp_id, self.next_bp_id + len(wanted)))
        self.next_bp_id += len(wanted)
        if self.debugger is None:
            # verified at launch, and said then by breakpoint events
            self.pending_lines = [p for p in self.pending_lines
                                  if p["source"].get("path") != source.get("path")]  # fmt: skip
            self.pending_lines.append({"source": source, "breakpoints": wanted, "ids": ids})
            return {"breakpoints": [{"id": i, "verified": False, "message": "not launched yet"}
                                    for i in ids]}  # fmt: skip
        return {"breakpoints": self._set_lines({"source": source, "breakpoints": wanted,
                                                "ids": ids})}  # fmt: skip

    def _set_lines(self, request: dict) -> list[dict]:
        debugger = self._debugger()
        path = request["source"].get("path") or ""
        mine = bool(path) and _same_file(path, self.program)
        if path and not mine and self.debugger is not None:
            return self._set_sourced_lines(request, path)
        points, out = [], []
        for bp_id, want in zip(request["ids"], request["breakpoints"]):
            line = want["line"]
            if not mine:
                why = f"not the program being debugged ({self.program})"
                out.append({"id": bp_id, "verified": False, "message": why})
                continue
            problem = (
                check_hit_condition(want["hitCondition"]) if want.get("hitCondition") else None
            )
            index = debugger.step_at_line(line)
            if problem or index is None:
                out.append({"id": bp_id, "verified": False, "line": line,
                            "message": problem or "no command at or after this line"})  # fmt: skip
                continue
            points.append(LineBreakpoint(bp_id, line, index, want.get("condition") or None,
                                         want.get("hitCondition") or None,
                                         want.get("logMessage")))  # fmt: skip
            out.append({"id": bp_id, "verified": True, "line": debugger.steps[index].line,
                        "source": self.source})  # fmt: skip
        if mine:
            debugger.line_breakpoints = points
        return out

    def _set_sourced_lines(self, request: dict, path: str) -> list[dict]:
        """Breakpoints in another script: they stop the run in it when the
        program sources it (stepped into, or run over)."""
        debugger = self._debugger()
        wanted = list(zip(request["ids"], request["breakpoints"]))
        points = [LineBreakpoint(bp_id, want["line"], None, want.get("condition") or None,
                                 want.get("hitCondition") or None, want.get("logMessage"))
                  for bp_id, want in wanted
                  if not check_hit_condition(want.get("hitCondition") or "1")]  # fmt: skip
        # (only reads the file: answered also while the program runs)
        steps = debugger.set_file_breakpoints(path, points)
        source = {"name": os.path.basename(path), "path": path}
        by_id = {bp.id: bp for bp in points}
        out = []
        for bp_id, want in wanted:
            bp = by_id.get(bp_id)
            if steps is None:
                why = f"not the program being debugged ({self.program}), nor a script rw can read"
                out.append({"id": bp_id, "verified": False, "message": why})
            elif bp is None:
                out.append({"id": bp_id, "verified": False, "line": want["line"],
                            "message": check_hit_condition(want["hitCondition"])})  # fmt: skip
            elif bp.index is None:
                out.append({"id": bp_id, "verified": False, "line": want["line"],
                            "message": "no command at or after this line"})  # fmt: skip
            else:
                out.append({"id": bp_id, "verified": True, "line": steps[bp.index].line,
                            "source": source})  # fmt: skip
        return out

    def request_setFunctionBreakpoints(self, args: dict) -> dict:
        wanted = args.get("breakpoints")
        if not isinstance(wanted, list) or not all(
            isinstance(b, dict) and isinstance(b.get("name"), str) and b["name"].strip()
            for b in wanted
        ):
            raise RequestError("setFunctionBreakpoints: each breakpoint needs a command name")
        points, out = [], []
        for want in wanted:
            bp_id = self.next_bp_id
            self.next_bp_id += 1
            problem = (
                check_hit_condition(want["hitCondition"]) if want.get("hitCondition") else None
            )
            if problem:
                out.append({"id": bp_id, "verified": False, "message": problem})
                continue
            points.append(FunctionBreakpoint(bp_id, want["name"].strip(),
                                             want.get("condition") or None,
                                             want.get("hitCondition") or None))  # fmt: skip
            out.append({"id": bp_id, "verified": True})
        self.function_points = points
        if self.debugger is not None:
            self.debugger.function_breakpoints = points
        return {"breakpoints": out}

    def request_setExceptionBreakpoints(self, args: dict) -> dict:
        filters = set(args.get("filters") or [])
        regex = None
        for option in args.get("filterOptions") or []:
            if not isinstance(option, dict):
                continue
            filters.add(option.get("filterId", ""))
            if option.get("filterId") == OUTPUT:
                regex = option.get("condition") or None
        unknown = filters - {FAILED, OUTPUT}
        if unknown:
            raise RequestError(f"no exception filter {sorted(unknown)[0]!r} (there are "
                               f"{FAILED!r} and {OUTPUT!r})")  # fmt: skip
        if OUTPUT in filters:
            if not regex:
                raise RequestError("the output filter needs a regular expression")
            try:
                re.compile(regex)
            except re.error as e:
                raise RequestError(f"invalid regex {regex!r}: {e}") from None
        self.filters, self.output_regex = filters, regex
        self._apply_filters()
        return {"breakpoints": [{"verified": True} for _ in filters]}

    def _apply_filters(self) -> None:
        if self.debugger is not None:
            self.debugger.filters = set(self.filters)
            self.debugger.output_pattern = (
                re.compile(self.output_regex) if self.output_regex else None
            )
            if self.function_points is not None:
                self.debugger.function_breakpoints = self.function_points

    def request_exceptionInfo(self, args: dict) -> dict:
        debugger = self._debugger()
        if debugger.last_exception is None:
            raise RequestError("no exception: the program did not stop on one")
        raised = debugger.last_exception
        ran = raised.ran
        return {
            "exceptionId": raised.id,
            "description": raised.description,
            "breakMode": "always",
            "details": {
                "message": ran.tail if ran else raised.description,
                "typeName": f"exit status {ran.exit_code}" if ran else "not run",
                "stackTrace": raised.step.command,
            },
        }

    # --- running -------------------------------------------------------------

    def request_continue(self, args: dict) -> object:
        return self.start(Debugger.continue_)

    def request_next(self, args: dict) -> object:
        return self.start(Debugger.next)

    def request_stepIn(self, args: dict) -> object:
        return self.start(Debugger.step_in)

    def request_stepOut(self, args: dict) -> object:
        return self.start(Debugger.step_out)

    def request_stepBack(self, args: dict) -> object:
        if not self._debugger().history:
            raise RequestError("nothing to step back to: no step has run")
        return self.start(Debugger.step_back)

    def request_reverseContinue(self, args: dict) -> object:
        if not self._debugger().history:
            raise RequestError("nothing to go back to: no step has run")
        return self.start(Debugger.reverse_continue)

    def request_pause(self, args: dict) -> dict:
        debugger = self._debugger()
        if not self.running:
            raise RequestError("the program is already paused")
        debugger.pause()
        return {}

    def request_gotoTargets(self, args: dict) -> dict:
        debugger = self._debugger()
        line = args.get("line")
        if not isinstance(line, int):
            raise RequestError("gotoTargets: a line is needed")
        source = args.get("source")
        path = source.get("path") if isinstance(source, dict) else None
        if path and not _same_file(path, self.program):
            return {"targets": []}  # the program's steps only (not a sourced script's)
        index = debugger.step_at_line(line)
        if index is None:
            return {"targets": []}
        step = debugger.steps[index]
        label = step.command.split("\n", 1)[0]
        return {"targets": [{"id": index + 1, "label": label, "line": step.line,
                             "endLine": step.end_line}]}  # fmt: skip

    def request_goto(self, args: dict) -> object:
        target = args.get("targetId")
        if not isinstance(target, int):
            raise RequestError("goto: a targetId from gotoTargets is needed")
        index = target - 1
        return self.start(lambda d: d.goto(index))

    def request_restart(self, args: dict) -> object:
        return self.start(Debugger.restart)

    def request_terminate(self, args: dict) -> object:
        debugger = self.debugger
        if debugger is not None and not debugger.ended:
            running = self.running  # then the run's end says exited and terminated
            debugger.kill()
            self.engine.submit(debugger.close).result()
            if not running:
                self.respond(self.request, None)
                self.event("exited", {"exitCode": 128 + 9})
                self.event("terminated")
                return _RESPONDED
        return {}

    def request_disconnect(self, args: dict) -> dict:
        self.done = True
        if self.debugger is not None:
            self.debugger.kill()
        return {}

    # --- the paused shell ----------------------------------------------------

    def request_evaluate(self, args: dict) -> object:
        expression = args.get("expression")
        if not isinstance(expression, str) or not expression.strip():
            raise RequestError("evaluate: nothing to evaluate")
        debugger = self._debugger()
        if args.get("context", "repl") == "repl":
            res = self.call(lambda: debugger.evaluate(expression))
            text = res.output.decode(errors="replace")
            if res.exit_code is None:  # `exit` typed: the program ends, as it would
                self.respond(self.request, {"result": text + "(the shell exited)",
                                            "variablesReference": 0})  # fmt: skip
                code = int(res.pipestatus) if res.pipestatus.lstrip("-").isdigit() else 0
                self.engine.submit(debugger.close).result()
                self.tell(Ended(code if code >= 0 else 128 - code))
                return _RESPONDED
            if res.exit_code:
                text += f"(exit {res.exit_code})"
            return {"result": text.rstrip("\n"), "variablesReference": 0}
        # hover, watch, clipboard: words expanded, nothing run
        return {"result": self.call(lambda: debugger.expand(expression)), "variablesReference": 0}

    def request_completions(self, args: dict) -> dict:
        text, column = args.get("text"), args.get("column")
        if not isinstance(text, str) or not isinstance(column, int):
            raise RequestError("completions: the text and the cursor's column are needed")
        debugger = self._debugger()
        before = text[: max(column - (1 if self.columns_at_1 else 0), 0)]
        start, found = self.call(lambda: debugger.complete(before))
        base = 1 if self.columns_at_1 else 0
        return {"targets": [{"label": f, "text": f, "start": start + base,
                             "length": len(before) - start} for f in found]}  # fmt: skip

    def request_setVariable(self, args: dict) -> dict:
        ref, name, value = args.get("variablesReference"), args.get("name"), args.get("value")
        if ref != TOP * 8 + ENVIRONMENT:
            raise RequestError("only the exported variables of the paused shell can be set")
        if not isinstance(name, str) or not isinstance(value, str):
            raise RequestError("setVariable: a name and a value are needed")
        debugger = self._debugger()
        self.call(lambda: debugger.set_export(name, value))
        return {"value": debugger.ex.env.get(name, value)}

    # --- looking -------------------------------------------------------------

    def request_source(self, args: dict) -> dict:
        source = args.get("source") or {}
        path = source.get("path") if isinstance(source, dict) else None
        if self.debugger is not None and path and not _same_file(path, self.program):
            text = self.debugger.sourced_text(path)
            if text is not None:  # a sourced script stepped into
                return {"content": text, "mimeType": "text/x-shellscript"}
        if self.debugger is None or (path and not _same_file(path, self.program)):
            raise RequestError("rw dap has only the program being debugged to show")
        return {"content": self.text, "mimeType": "text/x-shellscript"}

    def request_threads(self, args: dict) -> dict:
        return {"threads": [{"id": THREAD, "name": os.path.basename(self.program) or "script"}]}

    def request_stackTrace(self, args: dict) -> dict:
        debugger = self._debugger()
        if self.running:
            raise RequestError("the program is running; pause it first")
        frames = []
        sourced = debugger.sourced
        if sourced is not None:
            # the sourced script's frame above the program's
            step = debugger.current
            assert step is not None
            name = os.path.basename(sourced.path)
            frames.append(self._frame(TOP, step, f"{name} line {step.line}: "
                                      f"{_first(step.command)}", sourced.path))  # fmt: skip
            step = debugger.steps[sourced.at]
            frames.append(self._frame(SOURCING, step, f"line {step.line}: {_first(step.command)}"))
        elif debugger.current is not None:
            step = debugger.current
            frames.append(self._frame(TOP, step, f"line {step.line}: {_first(step.command)}"))
        for k in range(len(debugger.history) - 1, -1, -1):
            ran = debugger.history[k][1]
            path, step = debugger.step_of(ran.index, ran.inner)
            status = "?" if ran.exit_code is None else str(ran.exit_code)
            where = "" if ran.inner is None else f"{os.path.basename(path)} "
            frames.append(self._frame(1000 + k, step, f"ran {where}line {step.line} "
                                      f"({status}): {_first(step.command)}",
                                      None if ran.inner is None else path))  # fmt: skip
        start = args.get("startFrame") or 0
        levels = args.get("levels") or len(frames)
        return {"stackFrames": frames[start : start + levels], "totalFrames": len(frames)}

    def _frame(self, frame_id: int, step: script.Step, name: str, path: str | None = None) -> dict:
        source = self.source if path is None else {"name": os.path.basename(path), "path": path}
        return {"id": frame_id, "name": name, "source": source, "line": step.line,
                "column": 1, "endLine": step.end_line}  # fmt: skip

    def request_scopes(self, args: dict) -> dict:
        frame = args.get("frameId")
        if not isinstance(frame, int):
            raise RequestError("scopes: a frameId is needed")
        self._frame_state(frame)
        names = ((ENVIRONMENT, "Environment", "locals"), (SHELL, "Shell", "registers"),
                 (STEP, "Step", "arguments"))  # fmt: skip
        scopes = [{"name": n, "presentationHint": hint, "variablesReference": frame * 8 + kind,
                   "expensive": False} for kind, n, hint in names]  # fmt: skip
        if self._debugger().history:
            # what going back would restore: the watched files are compared with now
            scopes.append({"name": "Checkpoint", "variablesReference": frame * 8 + CHECKPOINT,
                           "expensive": True})  # fmt: skip
        return {"scopes": scopes}

    def _frame_state(self, frame: int) -> tuple[dict[str, str], set[str], int | None]:
        """(exported env, names changed, history position) of a frame."""
        debugger = self._debugger()
        if frame == TOP or (frame == SOURCING and debugger.sourced is not None):
            return debugger.ex.env, debugger.env_changed(), None
        k = frame - 1000
        if not 0 <= k < len(debugger.history):
            raise RequestError(f"no frame {frame}")
        before = debugger.history[k - 1][0].env if k else debugger.first_env
        env = debugger.history[k][0].env
        return env, {n for n in before.keys() | env.keys() if before.get(n) != env.get(n)}, k

    def request_variables(self, args: dict) -> dict:
        ref = args.get("variablesReference")
        if not isinstance(ref, int) or ref < 8:
            raise RequestError("variables: no such variablesReference")
        if self.running:
            raise RequestError("the program is running; pause it first")
        frame, kind = divmod(ref, 8)
        env, changed, k = self._frame_state(frame)
        debugger = self._debugger()
        if kind == ENVIRONMENT:
            return {"variables": [_var(n, env[n], "exported, changed" if n in changed
                                       else "exported", changed=n in changed)
                                  for n in sorted(env)]}  # fmt: skip
        if kind == SHELL:
            if k is None:
                last = debugger.history[-1][1] if debugger.history else None
                cwd = debugger.ex.cwd
            else:
                last = debugger.history[k - 1][1] if k else None
                cwd = debugger.history[k][0].cwd
            code = "" if last is None else str(last.exit_code)
            return {"variables": [_var("cwd", cwd), _var("$?", code or "0"),
                                  _var("PIPESTATUS", last.pipestatus if last else "")]}  # fmt: skip
        if kind == STEP:
            if k is None:
                sourced = debugger.sourced
                if frame == SOURCING and sourced is not None:  # the step sourcing it
                    at = debugger.steps[sourced.at]
                    return {"variables": [_var("command", at.command),
                                          _var("line", str(at.line)),
                                          _var("status", f"running {sourced.path}")]}  # fmt: skip
                step = debugger.current
                if step is None:
                    return {"variables": []}
                return {"variables": [_var("command", step.command), _var("line", str(step.line)),
                                      _var("status", "about to run")]}  # fmt: skip
            saved, ran = debugger.history[k]
            step = debugger.step_of(ran.index, ran.inner)[1]
            return {"variables": [
                _var("command", step.command), _var("line", str(step.line)),
                _var("exit code", "" if ran.exit_code is None else str(ran.exit_code)),
                _var("duration", f"{ran.duration_ms:.1f} ms"),
                _var("output", ran.tail),
                _var("checkpoint", "" if saved.checkpoint is None else str(saved.checkpoint)),
            ]}  # fmt: skip
        if kind == CHECKPOINT:
            back_to = len(debugger.history) - 1 if k is None else k
            pairs = self.call(lambda: debugger.going_back(back_to))
            return {"variables": [_var(what, how) for what, how in pairs]}
        raise RequestError("variables: no such variablesReference")


_RESPONDED = object()


def _first(command: str) -> str:
    first, _, rest = command.partition("\n")
    return first + (" …" if rest else "")


def _var(name: str, value: str, kind: str = "", changed: bool = False) -> dict:
    out: dict[str, Any] = {"name": name, "value": value, "variablesReference": 0}
    if kind:
        out["type"] = kind
    if changed:
        out["presentationHint"] = {"kind": "data", "attributes": ["changed"]}
    return out


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)
