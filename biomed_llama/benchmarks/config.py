"""Params of the benchmark readers (section `readers:`)."""

from __future__ import annotations

from typing import Literal

from biomed_llama.schema import StrictModel


class ReadersConfig(StrictModel):
    """How published benchmark files are read; used by instruct-mix, finetune task mode and prepare-eval."""

    medmcqa_cop: Literal["auto", "0-3", "1-4"] = "auto"
    """MedMCQA `cop` convention: `1-4` the original release, `0-3` the Hugging Face copy, `auto` detects it
    per file (a 0 means 0–3, a 4 means 1–4; a file with both is refused, a file with only 1–3 needs
    this set explicitly)."""
    duplicates: Literal["abort", "drop"] = "abort"
    """A MedQA / MedMCQA / PubMedQA item that occurs twice in one file (the same question id, the same PMID key, or
    the same record again): `abort` refuses the file (exit 4, naming the id and the file); `drop` keeps the first
    of exact duplicates and drops the others (listed in the manifest); a different record under a taken id always
    aborts. The published files have none (MedMCQA's ids and PubMedQA's PMIDs are unique)."""
