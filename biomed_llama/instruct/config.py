"""Params of the instruction mixture (`instruct-mix`); fine-tuning's are in `biomed_llama.train.config`.

The defaults are the embedded demo (the generated fixtures under `data/sample/instruct/`);
`configs/paper.yaml` lists the real sources with the paper's epoch factors and 150,000 records.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from biomed_llama.schema import StrictModel

SourceFormat = Literal["medqa", "medmcqa", "pubmedqa", "alpaca", "examples"]
Allocation = Literal["released", "proportional", "multinomial"]
FIXTURES = "data/sample/instruct"


class InstructSource(StrictModel):
    """One row of the mixture table: a named source read from one or more files of one format."""

    name: str = Field(min_length=1)
    """Source name written into every record's `source` field and the metrics (e.g. `medqa/train`)."""
    format: SourceFormat
    """Published format of the files: `medqa` (JSON lines, 4/5 options), `medmcqa` (JSON lines),
    `pubmedqa` (`ori_pqa*.json`, one object keyed by PMID), `alpaca` (JSON list of
    instruction/input/output), `examples` (the package's small JSON list for medpalm / CoT sets)."""
    paths: list[str] = Field(min_length=1)
    """Files of this source, read in the order given (their records are concatenated)."""
    epochs: float = Field(gt=0)
    """Epoch factor: the source's weight is its sample count × this factor."""
    cot: bool = False
    """Render chain-of-thought: the output is the explanation followed by the answer (`*-cot` sets)."""
    group: str | None = None
    """The seed table's row this source is counted in (e.g. `medpalm` for `usmleqa/medpalm`); None: its own name."""


# The released code's 20 sources and epoch factors (`evaluation/instruct_dataset.py:33-54`), with the
# seed table's row (group) each is counted in; the demo reads generated fixtures for each.
RELEASED_SOURCES: tuple[tuple[str, float, str], ...] = (
    ("usmleqa/train", 3, "MedQA-USMLE/train"),
    ("medmcqa/train", 0.2, "MedMCQA/train"),
    ("pubmedqa/train", 0.1, "PubMedQA/train"),
    ("AlpacaDataCleaned", 0.5, "AlpacaDataCleaned"),
    ("visual-med-alpaca", 0.5, "visual-med-alpaca"),
    ("usmleqa/medpalm", 5, "medpalm"),
    ("medmcqa/medpalm", 5, "medpalm"),
    ("pubmedqa/medpalm", 5, "medpalm"),
    ("liveqa/medpalm", 1, "medpalm"),
    ("medicationqa/medpalm", 1, "medpalm"),
    ("usmleqa/medpalm-cot", 3, "medpalm-cot"),
    ("medmcqa/medpalm-cot", 3, "medpalm-cot"),
    ("pubmedqa/medpalm-cot", 3, "medpalm-cot"),
    ("mmlu/medpalm-cot", 3, "medpalm-cot"),
    ("usmleqa/medpalm2-cot", 3, "medpalm2-cot"),
    ("medmcqa/medpalm2-cot", 3, "medpalm2-cot"),
    ("pubmedqa/medpalm2-cot", 3, "medpalm2-cot"),
    ("mmlu/medpalm2-cot", 3, "medpalm2-cot"),
    ("mmlu-cot", 3, "mmlu-cot"),
    ("codex-cot", 3, "codex-cot"),
)
_DEMO_FILES = {
    "usmleqa/train": ("medqa", "medqa/train_4opt.jsonl"),
    "medmcqa/train": ("medmcqa", "medmcqa/train_cop1.jsonl"),
    "pubmedqa/train": ("pubmedqa", "pubmedqa/ori_pqaa.json"),
    "AlpacaDataCleaned": ("alpaca", "alpaca/alpaca_data_cleaned.json"),
    "visual-med-alpaca": ("alpaca", "visual-med-alpaca/med_alpaca_data.json"),
    "mmlu-cot": ("examples", "examples/mmlu_cot.json"),
    "codex-cot": ("examples", "examples/codex_cot.json"),
}


def _demo_sources() -> list[InstructSource]:
    out = []
    for name, factor, group in RELEASED_SOURCES:
        fmt, rel = _DEMO_FILES.get(name, ("examples", f"examples/released/{name.replace('/', '_')}.json"))
        out.append(
            InstructSource(
                name=name,
                format=fmt,
                paths=[f"{FIXTURES}/{rel}"],
                epochs=factor,
                cot=name.endswith("-cot"),
                group=None if group == name else group,
            )
        )
    return out


class InstructMixConfig(StrictModel):
    """Instruction sources, epoch factors and the number of records drawn."""

    sources: list[InstructSource] = Field(default_factory=_demo_sources, min_length=1)
    """The sources of the mixture (the seed's table rows), each with its files and epoch factor."""
    n_records: int = Field(400, ge=1)
    """Records drawn into the mixture (150,000 in the paper: 3 epochs × 50,000 per epoch)."""
    seed: int = 1234
    """Seed of the draw (`random.Random` for `released`, numpy PCG64 for the others); the original drew unseeded."""
    allocation: Allocation = "released"
    """How the records are drawn (`biomed_llama.instruct.mixture`): `released` = the released code's
    `random.choices` over sources by weight, then `random.choice` within the source (seeded);
    `proportional` = per-source counts by largest-remainder rounding of N × share, records without
    needless repeats, one shuffle; `multinomial` = the same with multinomial per-source counts."""
    on_bad_record: Literal["skip", "abort"] = "skip"
    """A record missing a field or whose answer is not one of its options: count, report and skip, or abort
    (also applies to `finetune` task mode's train sets)."""
    output: str = "data/instruct"
    """Output folder: `mixture.jsonl` + `bad_records.jsonl` + `manifest.json`."""
    metrics: str = "metrics/instruct_mix.json"
    """Metrics file: count and percentage per source."""

    @model_validator(mode="after")
    def _check(self) -> InstructMixConfig:
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"instruct_mix.sources: duplicate name {dup[0]!r}")
        return self
