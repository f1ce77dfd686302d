"""Params of the instruction mixture (`instruct-mix`); fine-tuning's are in `biomed_llama.train.config`.

The defaults are the embedded demo (the generated fixtures under `data/sample/instruct/`);
`configs/paper.yaml` lists the real sources with the paper's epoch factors and 150,000 records.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from biomed_llama.schema import StrictModel

SourceFormat = Literal["medqa", "medmcqa", "pubmedqa", "alpaca", "examples"]
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


def _demo_sources() -> list[InstructSource]:
    f = FIXTURES
    return [
        InstructSource(name="medqa/train", format="medqa", paths=[f"{f}/medqa/train_4opt.jsonl"], epochs=3),
        InstructSource(name="medmcqa/train", format="medmcqa", paths=[f"{f}/medmcqa/train_cop1.jsonl"], epochs=0.2),
        InstructSource(name="pubmedqa/train", format="pubmedqa", paths=[f"{f}/pubmedqa/ori_pqaa.json"], epochs=0.1),
        InstructSource(name="AlpacaDataCleaned", format="alpaca", paths=[f"{f}/alpaca/alpaca_data_cleaned.json"],
                       epochs=0.5),
        InstructSource(name="visual-med-alpaca", format="alpaca",
                       paths=[f"{f}/visual-med-alpaca/med_alpaca_data.json"], epochs=0.5),
        InstructSource(name="medpalm", format="examples", paths=[f"{f}/examples/medpalm.json"], epochs=3),
        InstructSource(name="medpalm-cot", format="examples", paths=[f"{f}/examples/medpalm_cot.json"],
                       epochs=3, cot=True),
        InstructSource(name="medpalm2-cot", format="examples", paths=[f"{f}/examples/medpalm2_cot.json"],
                       epochs=3, cot=True),
        InstructSource(name="mmlu-cot", format="examples", paths=[f"{f}/examples/mmlu_cot.json"], epochs=3, cot=True),
        InstructSource(name="codex-cot", format="examples", paths=[f"{f}/examples/codex_cot.json"], epochs=3, cot=True),
    ]


class InstructMixConfig(StrictModel):
    """Instruction sources, epoch factors and the number of records drawn."""

    sources: list[InstructSource] = Field(default_factory=_demo_sources, min_length=1)
    """The sources of the mixture (the seed's table rows), each with its files and epoch factor."""
    n_records: int = Field(400, ge=1)
    """Records drawn into the mixture (150,000 in the paper: 3 epochs × 50,000 per epoch)."""
    seed: int = 1234
    """Seed of the draw (numpy PCG64); the original drew unseeded."""
    allocation: Literal["proportional", "multinomial"] = "proportional"
    """How many records each source gets: `proportional` = largest-remainder rounding of N × weight share
    (percentages then equal the table's MixtureP); `multinomial` = one multinomial draw, like the
    original's `random.choices` over sources."""
    on_bad_record: Literal["skip", "abort"] = "skip"
    """A record missing a field or whose answer is not one of its options: count, report and skip, or abort
    (also applies to `finetune` task mode's train sets)."""
    output: str = "data/instruct"
    """Output folder: `mixture.jsonl` + `bad_records.jsonl` + `manifest.json`."""
    metrics: str = "metrics/instruct_mix.json"
    """Metrics file: count and percentage per source."""

    @model_validator(mode="after")
    def _check(self) -> "InstructMixConfig":
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"instruct_mix.sources: duplicate name {dup[0]!r}")
        return self
