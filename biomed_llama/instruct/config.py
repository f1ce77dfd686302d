"""Params of the instruction mixture (`instruct-mix`) and of fine-tuning (`finetune`).

The defaults are the embedded demo (the generated fixtures under `data/sample/instruct/`);
`configs/paper.yaml` lists the real sources with the paper's epoch factors and 150,000 records.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from biomed_llama.schema import StrictModel

SourceFormat = Literal["medqa", "medmcqa", "pubmedqa", "alpaca", "examples"]
TaskFormat = Literal["medqa", "medmcqa", "pubmedqa"]
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


class TaskTrainSet(StrictModel):
    """A benchmark's train set for task fine-tuning (a fine-tune row of the table)."""

    format: TaskFormat
    """Published format of the file (`medqa`, `medmcqa` or `pubmedqa`)."""
    path: str
    """The train file (PubMedQA: `ori_pqaa.json`, the artificial set, as in the original)."""


class FinetuneHparams(StrictModel):
    """Optimiser, schedule and batch settings of one fine-tune mode (the original's HF Trainer arguments).

    Names match `PretrainConfig` so the pretrain engine takes them unchanged (`engine_overrides`).
    """

    lr: float = Field(2e-5, gt=0)
    """Peak learning rate (AdamW)."""
    weight_decay: float = Field(1e-4, ge=0)
    """AdamW weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas (the original's HF Trainer defaults)."""
    eps: float = Field(1e-8, gt=0)
    """AdamW epsilon (HF Trainer default)."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Gradient-norm clipping threshold (HF Trainer default)."""
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    """Fraction of the total steps spent in linear warmup."""
    num_cycles: float = Field(0.5, ge=0)
    """Cosine cycles after warmup: 0.5 = HF `lr_scheduler_type cosine`, decaying to 0 (the original's setting)."""
    epochs: float = Field(3, gt=0)
    """Passes over the training examples; steps = ceil(epochs × examples / global_batch_size)."""
    global_batch_size: int = Field(128, ge=1)
    """Sequences per optimiser step over all ranks (the original: 1 per device × 16 accumulation × 8 GPUs)."""
    micro_batch_size: int = Field(1, ge=1)
    """Sequences per rank per forward pass; accumulation steps = global / (micro × world)."""

    @model_validator(mode="after")
    def _check(self) -> "FinetuneHparams":
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(f"micro_batch_size ({self.micro_batch_size}) must divide "
                             f"global_batch_size ({self.global_batch_size})")
        return self

    def steps(self, n_examples: int) -> int:
        """Optimiser steps for `n_examples` examples: ceil(epochs × n / global batch), at least 1."""
        return max(1, math.ceil(self.epochs * n_examples / self.global_batch_size))


class FinetuneConfig(StrictModel):
    """Instruction tuning (`instruct`) and per-task full fine-tuning (`task`).

    Everything the pretrain engine needs beyond these (device, dtypes, sharding, compile, logging,
    checkpoint interval) comes from the `pretrain` section: `engine_overrides` lists what differs.
    """

    model: str = "models/pretrained"
    """Model to fine-tune: a HF directory (the pretrain stage's export by default)."""
    instruct_output: str = "models/instruct"
    """HF directory written by instruction tuning."""
    task_output_prefix: str = "models/ft-"
    """Task fine-tuning writes `<prefix><task>` (e.g. `models/ft-medqa`)."""
    checkpoints: str = "checkpoints/finetune"
    """Distributed checkpoints, one sub-folder per run (`instruct`, `task-<name>`)."""
    metrics_prefix: str = "metrics/finetune_"
    """Metrics JSON per run: `<prefix>instruct.json`, `<prefix><task>.json`."""
    plots: str = "plots/finetune"
    """Loss-curve folders per run: `<plots>/instruct/`, `<plots>/<task>/`."""
    checkpoint_every: int = Field(300, ge=1)
    """Save a distributed checkpoint every this many steps (the original: 300, keeping 3)."""
    max_length: int = Field(256, ge=4)
    """Longest sequence in tokens (BOS + prompt + output + EOS); 2048 in the paper."""
    truncation: Literal["right", "prompt_left"] = "right"
    """Over-long examples: `right` cuts the end like the original (an example left without any output
    token is dropped and counted); `prompt_left` drops prompt tokens from the left so the output survives."""
    mixture: str = "data/instruct"
    """The instruct-mix output folder read in `instruct` mode."""
    instruct: FinetuneHparams = Field(default_factory=lambda: FinetuneHparams(epochs=1))
    """Instruction tuning: the original trained 1 pass over its 150,000 drawn records (its 3 epochs
    × 50,000 were folded into the draw), lr 2e-5, wd 1e-4, warmup 0.03, cosine, batch 128."""
    task: FinetuneHparams = Field(default_factory=FinetuneHparams)
    """Task fine-tuning (the table's fine-tune rows): lr 2e-5, wd 1e-4, warmup 0.03, cosine, 3 epochs, batch 128."""
    tasks: dict[str, TaskTrainSet] = Field(default_factory=lambda: {
        "medqa": TaskTrainSet(format="medqa", path=f"{FIXTURES}/medqa/train_4opt.jsonl"),
        "medmcqa": TaskTrainSet(format="medmcqa", path=f"{FIXTURES}/medmcqa/train_cop1.jsonl"),
        "pubmedqa": TaskTrainSet(format="pubmedqa", path=f"{FIXTURES}/pubmedqa/ori_pqaa.json"),
    })
    """Train sets of `task` mode by task name (the name picks the output folder `<prefix><name>`)."""

    def run_name(self, mode: Literal["instruct", "task"], task: str | None = None) -> str:
        """`instruct`, or the task name in task mode (names checkpoints, metrics and plots)."""
        if mode == "instruct":
            return "instruct"
        if task not in self.tasks:
            raise ValueError(f"unknown fine-tune task {task!r}; finetune.tasks has {sorted(self.tasks)}")
        return task  # type: ignore[return-value]

    def engine_overrides(self, mode: Literal["instruct", "task"], task: str | None,
                         n_examples: int) -> dict[str, Any]:
        """`PretrainConfig` fields a fine-tune run replaces: `params.pretrain.model_copy(update=…)`.

        The model to start from is `model` (the lead sets `model.base` to it); `tokenizer` is the same
        folder, whose tokenizer files the export copies.
        """
        hp = self.instruct if mode == "instruct" else self.task
        name = self.run_name(mode, task)
        output = self.instruct_output if mode == "instruct" else f"{self.task_output_prefix}{name}"
        return {
            "lr": hp.lr, "betas": hp.betas, "eps": hp.eps, "weight_decay": hp.weight_decay,
            "warmup_ratio": hp.warmup_ratio, "num_cycles": hp.num_cycles, "max_grad_norm": hp.max_grad_norm,
            "global_batch_size": hp.global_batch_size, "micro_batch_size": hp.micro_batch_size,
            "max_steps": hp.steps(n_examples), "max_seq_length": self.max_length, "shuffle": True,
            "checkpoint_every": self.checkpoint_every,
            "checkpoint_dir": f"{self.checkpoints}/{'instruct' if mode == 'instruct' else 'task-' + name}",
            "tokenizer": self.model, "output": output, "metrics": f"{self.metrics_prefix}{name}.json", "plots": f"{self.plots}/{name}",
        }
