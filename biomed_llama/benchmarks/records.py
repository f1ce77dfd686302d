"""Parsed items (before templating or scoring) and the bad-record policy shared by every reader.

A reader turns each published record into one of the item types below. The same parsed MedQA
record then becomes an instruction (`instruct.templates.render_instruct`), a fine-tune example
(`render_task`) or an evaluation document (`eval.formats.eval_docs`): parsing is done once, here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

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


Item = Union[MCItem, YesNoItem, OpenItem, InstructionItem]


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
    """Applies a bad-record policy: `abort` raises BadRecordError at the first one, `skip` collects them."""

    policy: Literal["skip", "abort"]
    advice: str = "on_bad_record: abort; set skip to drop such records"
    """Appended to the abort message in parentheses: what the user can do about it."""
    found: list[BadRecord] = field(default_factory=list)

    def report(self, path: str, position: str, reason: str) -> None:
        """Record a bad record, or raise BadRecordError naming file and position under `abort`."""
        bad = BadRecord(str(path), position, reason)
        if self.policy == "abort":
            raise BadRecordError(f"{bad} ({self.advice})")
        self.found.append(bad)
