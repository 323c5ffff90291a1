"""Comparing two runs step by step: where they diverged and how."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..store import StepRow, Store
from .history import Output

SAME, COMMAND, EXIT_CODE, OUTPUT, ONLY_A, ONLY_B = (
    "same", "command", "exit_code", "output", "only_a", "only_b",
)  # fmt: skip


CONTEXT_LINES = 3  # of a unified diff of two outputs
OUTPUT_LINES = 12  # lines of it shown per step, unless asked for more
MATCH_LINES = 20_000  # of each output matched line by line, unless all of it is asked for


@dataclass(frozen=True)
class OutputSide:
    """What is known of one run's output of a step, beside the diff."""

    size: int  # bytes the step printed
    omitted: int  # of them, left out by the cap (the middle)
    complete: bool
    binary: bool

    @classmethod
    def of(cls, out: Output) -> OutputSide:
        return cls(out.size, out.omitted, out.complete, binaryish(out))

    def to_json(self) -> dict:
        return {
            "bytes": self.size,
            "truncated": self.omitted > 0,
            "omitted": self.omitted,
            "complete": self.complete,
            "binary": self.binary,
        }


@dataclass(frozen=True)
class OutputDiff:
    """How two runs' outputs of a step differ: the first lines of a unified diff
    of their text (hunk headers, context, `-` A's lines, `+` B's), and how many
    more lines differ beyond them. Binary output is not diffed by line."""

    a: OutputSide
    b: OutputSide
    lines: list[str]  # empty when either output is binary
    # Lines that differ (- or +) beyond `lines`, and in all; None: not counted
    # (long outputs, matched only in their first lines: more may differ).
    more: int | None
    changed: int | None

    def to_json(self) -> dict:
        return {
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "diff": self.lines,
            "more": self.more,
            "changed_lines": self.changed,
        }


@dataclass(frozen=True)
class StepPair:
    status: str
    a: StepRow | None
    b: StepRow | None
    output: OutputDiff | None = None  # when both runs recorded outputs that differ
    recorded: str | None = None  # "a" or "b": the one run that recorded the output

    def to_json(self) -> dict:
        doc: dict = {
            "status": self.status,
            "a": self.a.number if self.a else None,
            "b": self.b.number if self.b else None,
        }
        if self.output is not None:
            doc["output"] = self.output.to_json()
        if self.recorded is not None:
            doc["output_recorded"] = self.recorded
        return doc


@dataclass(frozen=True)
class Comparison:
    pairs: list[StepPair]
    divergence: tuple[int | None, int | None] | None

    @property
    def differs(self) -> bool:
        return self.divergence is not None

    def to_json(self) -> dict:
        div = self.divergence
        return {
            "divergence": None if div is None else {"a": div[0], "b": div[1]},
            "steps": [p.to_json() for p in self.pairs],
        }


class StoredOutputs:
    """The stored outputs of two sessions' steps: which pairs of steps the
    store holds alike (most of two runs' outputs: never read), and the others,
    read one by one."""

    def __init__(self, store: Store, sid_a: str, sid_b: str):
        self.store, self.sid_a, self.sid_b = store, sid_a, sid_b

    def alike(self, pairs: list[tuple[StepRow, StepRow]]) -> list[tuple[bool, bool, bool]]:
        numbers = [(a.number, b.number) for a, b in pairs]
        return self.store.outputs_alike(self.sid_a, self.sid_b, numbers)

    def get(self, sid: str, step: StepRow) -> Output | None:
        row = self.store.step_output(sid, step.number)
        return None if row is None else Output.of(row, step.command)


def binaryish(out: Output) -> bool:
    """Output that is not text: a NUL, or many bytes that are not UTF-8."""
    head = out.raw[:65536]
    if b"\0" in head:
        return True
    bad = out.text.count("\ufffd")
    return bad > 8 and bad * 10 > len(out.text)


def diff_outputs(
    a: Output, b: Output, *, context: int = CONTEXT_LINES, limit: int | None = OUTPUT_LINES
) -> OutputDiff | None:
    """How the outputs `a` and `b` differ (None: their text is the same, and
    so are their bytes where either is binary), with at most `limit` lines of
    the unified diff (None: all of it)."""
    side_a, side_b = OutputSide.of(a), OutputSide.of(b)
    if side_a.binary or side_b.binary:
        return None if a.raw == b.raw else OutputDiff(side_a, side_b, [], 0, 0)
    if a.text == b.text:
        return None
    a_lines, b_lines = a.text.splitlines(), b.text.splitlines()
    # The lines both begin and end with are left out of the matching (the
    # hunks' numbers stay the outputs' own): long outputs differ in a few lines.
    start = 0
    while start < min(len(a_lines), len(b_lines)) and a_lines[start] == b_lines[start]:
        start += 1
    end = 0
    while end < min(len(a_lines), len(b_lines)) - start and a_lines[-1 - end] == b_lines[-1 - end]:
        end += 1
    keep = max(0, start - context)
    a_mid = a_lines[keep : len(a_lines) - max(0, end - context)]
    b_mid = b_lines[keep : len(b_lines) - max(0, end - context)]
    # Matching costs up to the product of the lengths: to show the first lines,
    # long outputs are matched in their first MATCH_LINES lines only, and the
    # hunks near that cut (which may be its doing) left out, but for the first.
    cut = limit is not None and max(len(a_mid), len(b_mid)) > MATCH_LINES
    if cut:
        a_mid, b_mid = a_mid[:MATCH_LINES], b_mid[:MATCH_LINES]
    groups = difflib.SequenceMatcher(None, a_mid, b_mid).get_grouped_opcodes(context)
    lines: list[str] = []
    for group in groups:
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        near_cut = cut and max(i2, j2) > MATCH_LINES - 2 * context
        if near_cut and lines:
            break
        lines.append(f"@@ -{_span(keep + i1, i2 - i1)} +{_span(keep + j1, j2 - j1)} @@")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines += [" " + x for x in a_mid[i1:i2]]
                continue
            lines += ["-" + x for x in a_mid[i1:i2]]
            lines += ["+" + x for x in b_mid[j1:j2]]
    changed = sum(1 for ln in lines if ln[:1] in "-+")
    if not cut and (limit is None or len(lines) <= limit):
        return OutputDiff(side_a, side_b, lines, 0, changed)
    shown = lines[:limit]
    more = changed - sum(1 for ln in shown if ln[:1] in "-+")
    return OutputDiff(side_a, side_b, shown, None if cut else more, None if cut else changed)


def _span(start: int, length: int) -> str:
    """Lines `start`.. (from 0) in a hunk header, as `diff -u` writes them."""
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def compare(
    a_steps: list[StepRow],
    b_steps: list[StepRow],
    outputs: StoredOutputs | None = None,
    *,
    output_lines: int | None = OUTPUT_LINES,
) -> Comparison:
    """Align the two sequences by command (an inserted or removed step shifts
    nothing after it), then compare the aligned steps: their exit codes, and
    their outputs where both runs recorded them (how they differ, at most
    `output_lines` lines of it; None: all)."""
    opcodes = difflib.SequenceMatcher(
        None, [s.command for s in a_steps], [s.command for s in b_steps], autojunk=False
    ).get_opcodes()

    def matched(a: StepRow, b: StepRow, has_a: bool, has_b: bool, alike: bool) -> StepPair:
        status = EXIT_CODE if a.exit_code != b.exit_code else SAME
        if not (has_a and has_b):  # compared only where both runs recorded it
            return StepPair(status, a, b, recorded="a" if has_a else "b" if has_b else None)
        if alike or outputs is None:
            return StepPair(status, a, b)
        out_a, out_b = outputs.get(outputs.sid_a, a), outputs.get(outputs.sid_b, b)
        if out_a is None or out_b is None:  # (removed since: rw gc)
            return StepPair(status, a, b)
        differs = diff_outputs(out_a, out_b, limit=output_lines)
        if differs is not None and status == SAME:
            status = OUTPUT
        return StepPair(status, a, b, differs)

    same_command = [
        (a, b)
        for tag, i1, i2, j1, j2 in opcodes
        if tag == "equal"
        for a, b in zip(a_steps[i1:i2], b_steps[j1:j2])
    ]
    # Which outputs the store holds, and alike, asked at once for all the pairs.
    found = outputs.alike(same_command) if outputs else [(False, False, True)] * len(same_command)
    compared = iter([matched(a, b, *f) for (a, b), f in zip(same_command, found)])
    pairs: list[StepPair] = []
    for tag, i1, i2, j1, j2 in opcodes:
        if tag == "equal":
            pairs += [next(compared) for _ in range(i2 - i1)]
        elif tag == "replace":
            common = min(i2 - i1, j2 - j1)
            for k in range(common):
                pairs.append(StepPair(COMMAND, a_steps[i1 + k], b_steps[j1 + k]))
            pairs += [StepPair(ONLY_A, a, None) for a in a_steps[i1 + common : i2]]
            pairs += [StepPair(ONLY_B, None, b) for b in b_steps[j1 + common : j2]]
        elif tag == "delete":
            pairs += [StepPair(ONLY_A, a, None) for a in a_steps[i1:i2]]
        else:  # insert
            pairs += [StepPair(ONLY_B, None, b) for b in b_steps[j1:j2]]
    return Comparison(pairs, _divergence(pairs, a_steps, b_steps))


def _divergence(
    pairs: list[StepPair], a_steps: list[StepRow], b_steps: list[StepRow]
) -> tuple[int | None, int | None] | None:
    """The first step where the runs differ, as a step number in each. Where one
    run has no step there, the number is where its next step would be."""
    next_a, next_b = 1, 1
    for p in pairs:
        if p.status != SAME:
            a = p.a.number if p.a else (next_a if next_a <= len(a_steps) else None)
            b = p.b.number if p.b else (next_b if next_b <= len(b_steps) else None)
            return a, b
        next_a = p.a.number + 1 if p.a else next_a
        next_b = p.b.number + 1 if p.b else next_b
    return None
