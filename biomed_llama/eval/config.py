"""Params of benchmark preparation (`prepare-eval`) and evaluation (`evaluate`, `report`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from biomed_llama.schema import StrictModel

SUITES = ("seed", "instruct", "modern", "finetune")
TABLE_METRICS = "table"
"""`<metrics_dir>/table.json`: the table's measured cells (a model may not take this name, nor `random`)."""
MC_TASKS = ("medqa4", "medqa5", "medmcqa", "pubmedqa")
PPL_TASKS = ("pubmed_a", "pubmed_c")
# The MC tasks whose seed-suite few-shot examples come from a train file, and the key naming it.
POOL_KEYS = {"medqa4": "medqa4_train", "medqa5": "medqa5_train", "medmcqa": "medmcqa_train"}


class BenchmarkFiles(StrictModel):
    """The benchmark files in the formats they are published in (paths relative to the repo root).

    How they are parsed (MedMCQA's `cop` convention) is the top-level `readers` section. The
    few-shot pools have no default: a seed-suite few-shot run of a task whose pool is unset is a
    ConfigError naming the key, never a silent fall-back to other files.
    """

    medqa4_test: str = "data/sample/eval/medqa/US/4_options/phrases_no_exclude_test.jsonl"
    """MedQA-USMLE 4-option test set (JSON lines with `question`, `answer`, `options` {A..D}, `answer_idx`)."""
    medqa4_train: str | None = None
    """MedQA-USMLE 4-option train set: the seed suite's few-shot pool (required when its few-shot run is asked for)."""
    medqa5_test: str = "data/sample/eval/medqa/US/test.jsonl"
    """MedQA-USMLE 5-option test set (JSON lines, options {A..E})."""
    medqa5_train: str | None = None
    """MedQA-USMLE 5-option train set: the few-shot pool (required when its few-shot run is asked for)."""
    medmcqa_dev: str = "data/sample/eval/medmcqa/dev.json"
    """MedMCQA validation set as released (JSON lines, `opa`..`opd`, `cop`: see `readers.medmcqa_cop`)."""
    medmcqa_train: str | None = None
    """MedMCQA train set: the few-shot pool (required when its few-shot run is asked for)."""
    pubmedqa_labeled: str = "data/sample/eval/pubmedqa/ori_pqal.json"
    """PubMedQA `ori_pqal.json` (one object keyed by PMID); all items are the test set (the original's 1,000),
    and its few-shot examples come from it too (v0.3's rule for a task without training docs)."""
    pile_extracted: str = "data/extracted"
    """The extract stage's output; the Pile **test** split of PubMed Abstracts / Central gives the perplexity rows
    (read, and its manifest verified, only when a model's suites ask for a perplexity task)."""

    def pool(self, task: str) -> tuple[str, str | None]:
        """The few-shot pool of an MC task: `(param key, path or None)`; PubMedQA has none (`("", None)`)."""
        key = POOL_KEYS.get(task)
        return (f"eval.benchmarks.{key}", getattr(self, key)) if key else ("", None)


class EvalModel(StrictModel):
    """One model to evaluate and where its cells go in the table."""

    path: str | None
    """A Hugging Face model directory (safetensors + tokenizer), e.g. `models/pretrained`, or a folder of seed
    runs (`seed-<s>/` each a HF directory: mean ± std over them); null: not evaluated, its rows show the
    paper's values as `not measured` (the reference models: name their HF directory here to evaluate them)."""
    paper_row: str
    """The seed table's model this one stands in for (`Random`, `GPT-Neo (2.7B)`, `BioMedLM (2.7B)`, `LLaMA-7B`,
    `PMC-LLaMA-7B`, `BioMed-LLaMA-7B`): its values go beside ours."""
    suites: list[Literal["seed", "instruct", "modern", "finetune"]] = Field(default_factory=lambda: ["seed"], min_length=1)
    """Suites to run on this model: `seed` (the table's method), `instruct`, `modern` (lm-eval built-in style), `finetune`."""
    tasks: list[Literal["pubmed_a", "pubmed_c", "medqa4", "medqa5", "medmcqa", "pubmedqa"]] | None = None
    """Restrict to these tasks (e.g. a task fine-tune evaluates only its own task); None: every task of each suite."""


class EvalConfig(StrictModel):
    """Benchmark files, models to evaluate, suites and shot settings."""

    benchmarks: BenchmarkFiles = Field(default_factory=BenchmarkFiles)
    """Where the published benchmark files are."""
    output: str = "data/eval"
    """prepare-eval output: task JSON-lines files, rendered lm-eval task YAMLs (`tasks/`), manifest.json."""
    ppl_max_docs: int | None = Field(None, ge=1)
    """Use only the first N test documents of each PubMed subset for perplexity (None: all)."""
    models: dict[str, EvalModel] = Field(default_factory=lambda: {
        "pretrained": EvalModel(path="models/pretrained", paper_row="BioMed-LLaMA-7B", suites=["seed", "modern"])})
    """Models to evaluate, by name (the name names `metrics/eval/<name>.json`)."""
    shots: list[Literal["zero", "few"]] = Field(default_factory=lambda: ["zero", "few"], min_length=1)
    """Shot settings of the `seed` and `modern` suites: zero-shot and/or the table's few-shot counts."""
    fewshot: dict[Literal["medqa4", "medqa5", "medmcqa", "pubmedqa"], int] = Field(
        default_factory=lambda: {"medqa4": 3, "medqa5": 3, "medmcqa": 10, "pubmedqa": 1})
    """Few-shot counts per task (the table's 3, 3, 10, 1)."""
    fewshot_seed: int = 42
    """Seed of the v0.3-style example selection (`random.Random(42)` in the original harness)."""
    dtype: Literal["float16", "bfloat16", "float32", "auto"] = "float16"
    """Weights dtype for evaluation (the original: float16; CPU demo: float32)."""
    device: str = "cuda"
    """Torch device for the HF backend (`cuda`, `cuda:0`, `cpu`)."""
    batch_size: int | Literal["auto"] = "auto"
    """lm-eval batch size, or `auto` to probe the largest that fits."""
    max_length: int = Field(2048, ge=16)
    """Context length of the harness (rolling perplexity windows and truncation); the original's 2048."""
    pair_encoding: Literal["joint", "separate"] = "joint"
    """How a (context, continuation) pair is tokenized: `joint` = lm-eval 0.4's stock HF backend (the
    stock `lm_eval --model hf` CLI gives the same numbers); `separate` = v0.3's two encodes (the
    original's behaviour; matters for SentencePiece tokenizers, see eval/v03_model.py)."""
    max_new_tokens: int = Field(128, ge=1)
    """Greedy generation budget of the `finetune` scoring."""
    limit: int | None = Field(None, ge=1)
    """Evaluate only the first N documents of each task (debugging; None: all, as the table)."""
    mc_metric: Literal["acc", "acc_norm"] = "acc"
    """Which multiple-choice metric the table shows (both are always stored)."""
    random_baseline: bool = True
    """Compute the Random row: the chance accuracy of each prepared test set (`metrics/eval/random.json`)."""
    metrics_dir: str = "metrics/eval"
    """Flat per-model metrics JSON files (DVC metrics)."""
    results_dir: str = "reports/eval"
    """lm-eval's full results and per-sample logs, one folder per model."""
    table: str = "reports/table.md"
    """The rendered results table (seed layout, paper values beside measured cells)."""
    figure: str = "reports/loss.png"
    """The training-loss figure `evaluate` (and `report`) draws from the DVC plots data, like the seed's training curve."""
    loss_plots: dict[str, str] = Field(default_factory=lambda: {
        "pretrain": "plots/pretrain/loss.tsv", "finetune": "plots/finetune/loss.tsv"})
    """Loss TSVs (DVCLive format: `step` + a value column) per training stage, drawn by `report`."""
    progress: bool = True
    """Show a rich progress display over the (model, suite, shots, task) runs."""

    @model_validator(mode="after")
    def _check(self) -> "EvalConfig":
        for name in self.models:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"model name {name!r} must be a plain file name")
            if name in ("random", TABLE_METRICS):
                raise ValueError(f"model name {name!r} is taken by the table's own metrics files")
        return self
