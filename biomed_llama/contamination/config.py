"""Params of the `contamination` stage: validation only, no reader imports (pyarrow, lm-eval)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from biomed_llama.schema import StrictModel


class ContaminationConfig(StrictModel):
    """Which extracted documents are scanned for the benchmark test items' n-grams, and where the verdicts go.

    The benchmark side is `eval.benchmarks`' four multiple-choice test sets, read by the `readers` params
    exactly as prepare-eval reads them (so an item's `idx` is the one `evaluate` scores)."""

    SPEED_ONLY: ClassVar[frozenset[str]] = frozenset({"workers"})  # the output is byte-identical for any count

    input: str = "data/extracted"
    """The extract stage's output folder (its manifest is verified before anything is read)."""
    subsets: list[str] = Field(default_factory=lambda: ["pubmed_abstracts", "pubmed_central"], min_length=1)
    """Subset folders of `input` to scan (the pretraining corpus: both PubMed subsets)."""
    split: Literal["train", "val", "test"] = "train"
    """Split of `input` to scan: `train`, what pretraining read."""
    ngram: int = Field(13, ge=1)
    """n of the word n-grams compared: lm-eval's (and GPT-3's) 13. An item with fewer than n words has no
    n-gram and so can never be found contaminated (lm-eval's rule); it is counted as `short`."""
    max_doc_ids: int = Field(20, ge=0)
    """How many matching documents (`<Pile file>:<line>`, in corpus order) are listed per item; all are counted."""
    workers: int = Field(2, ge=1)
    """Processes scanning extracted files in parallel (output bytes do not depend on it; the demo's 2 cores)."""
    output: str = "data/contamination"
    """Output folder: `<task>.json` (one verdict per test item), `summary.json`, manifest.json."""
    metrics: str = "metrics/contamination.json"
    """Metrics JSON: contaminated items and their share per task (details beside it: corpus size, MB/s)."""

    @model_validator(mode="after")
    def _check(self) -> ContaminationConfig:
        if len(set(self.subsets)) != len(self.subsets):
            raise ValueError(f"subsets lists a folder twice: {self.subsets}")
        if self.input == self.output:
            raise ValueError("contamination.input and contamination.output must differ")
        return self
