"""Parsed items (before templating or scoring) and the bad-record policy shared by every reader.

A reader turns each published record into one of the item types below. The same parsed MedQA
record then becomes an instruction (`instruct.templates.render_instruct`), a fine-tune example
(`render_task`) or an evaluation document (`eval.formats.eval_docs`): parsing is done once, here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from biomed_llama.errors import BadRecordError

LETTERS = "ABCDEFGHIJ"
YES_NO_MAYBE = ("yes", "no", "maybe")


@dataclass(frozen=True)
class MCItem:
    """A multiple-choice question: options in letter order, `answer` is the gold option's letter."""

    question: str
    options: tuple[str, ...]
    answer: str
    explanation: str | None = None
    id: str | None = None
    """The record's id: its own where the format has one (MedMCQA `id`), else `<file stem>-<line>`."""

    @property
    def answer_text(self) -> str:
        """The gold option's text."""
        return self.options[LETTERS.index(self.answer)]


@dataclass(frozen=True)
class YesNoItem:
    """A PubMedQA-style item: abstract contexts, question and a yes / no / maybe decision."""

    question: str
    contexts: tuple[str, ...]
    answer: Literal["yes", "no", "maybe"]
    explanation: str | None = None
    id: str | None = None
    """The record's id (PubMedQA: its PMID)."""

    @property
    def context(self) -> str:
        """The abstract: contexts joined by newlines, as the original did."""
        return "\n".join(self.contexts)


@dataclass(frozen=True)
class OpenItem:
    """A free-answer medical question (medpalm's consumer-health sets)."""

    question: str
    answer: str
    explanation: str | None = None


@dataclass(frozen=True)
class InstructionItem:
    """An Alpaca-style instruction with optional input and its response."""

    instruction: str
    input: str
    output: str


Item = MCItem | YesNoItem | OpenItem | InstructionItem


@dataclass(frozen=True)
class BadRecord:
    """One rejected input record: where it was and why."""

    path: str
    position: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.position}: {self.reason}"


@dataclass
class BadRecords:
    """Applies a bad-record policy: `abort` raises BadRecordError at the first one, `skip` collects them.

    A duplicate item (`duplicate`) follows its own policy (`readers.duplicates`), whatever `policy` says: a
    repeated item would count twice in an evaluation set's denominator, or weigh twice in a fine-tune.
    """

    policy: Literal["skip", "abort"]
    advice: str = "on_bad_record: abort; set skip to drop such records"
    """Appended to the abort message in parentheses: what the user can do about it."""
    found: list[BadRecord] = field(default_factory=list)
    duplicates: Literal["abort", "drop"] = "abort"
    """`abort`: a duplicate item is BadRecordError (exit 4) naming its id and file; `drop`: an exact duplicate
    (the same record again) is dropped and listed in `dropped` (a different record under a taken id still aborts)."""
    dropped: list[BadRecord] = field(default_factory=list)
    """The exact duplicates dropped under `duplicates: drop`, each with the position of the record it repeats."""

    def report(self, path: str, position: str, reason: str) -> None:
        """Record a bad record, or raise BadRecordError naming file and position under `abort`."""
        bad = BadRecord(str(path), position, reason)
        if self.policy == "abort":
            raise BadRecordError(f"{bad} ({self.advice})")
        self.found.append(bad)

    def duplicate(self, path: str, position: str, item_id: str, first: str, identical: bool) -> None:
        """A record whose id (or whole content) repeats the one at `first`: drop it (exact, `drop`) or abort."""
        what = "an exact duplicate" if identical else "a different record"
        if identical and self.duplicates == "drop":
            self.dropped.append(BadRecord(str(path), position, f"exact duplicate of {first} (id {item_id}), dropped"))
            return
        advice = (
            "readers.duplicates: drop drops exact duplicates"
            if identical
            else "two different records share the id: fix or replace the file"
        )
        raise BadRecordError(f"{path}:{position}: duplicate item id {item_id} ({what} of {first}; {advice})")
