"""Comparing two runs step by step: where they diverged and how."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from ..store import StepRow

SAME, COMMAND, EXIT_CODE, OUTPUT, ONLY_A, ONLY_B = (
    "same", "command", "exit_code", "output", "only_a", "only_b",
)  # fmt: skip


@dataclass(frozen=True)
class StepPair:
    status: str
    a: StepRow | None
    b: StepRow | None

    def to_json(self) -> dict:
        return {
            "status": self.status,
            "a": self.a.number if self.a else None,
            "b": self.b.number if self.b else None,
        }


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


OutputOf = Callable[[StepRow], "bytes | None"]


def compare(
    a_steps: list[StepRow],
    b_steps: list[StepRow],
    output_a: OutputOf | None = None,
    output_b: OutputOf | None = None,
) -> Comparison:
    """Align the two sequences by command (an inserted or removed step shifts
    nothing after it), then compare the aligned steps."""
    matcher = difflib.SequenceMatcher(
        None, [s.command for s in a_steps], [s.command for s in b_steps], autojunk=False
    )

    def matched(a: StepRow, b: StepRow) -> str:
        if a.exit_code != b.exit_code:
            return EXIT_CODE
        if output_a and output_b:
            out_a, out_b = output_a(a), output_b(b)
            if out_a is not None and out_b is not None and out_a != out_b:
                return OUTPUT  # compared only where both runs recorded it
        return SAME

    pairs: list[StepPair] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for a, b in zip(a_steps[i1:i2], b_steps[j1:j2]):
                pairs.append(StepPair(matched(a, b), a, b))
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
