"""One model member's runs (its HF folder: the model, or one seed run of it), shared by `evaluate`'s serial path
(eval/run.py) and its worker processes (eval/units.py): the same scoring, metrics and saved files either way."""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomed_llama.errors import ConfigError
from biomed_llama.eval import generate, harness
from biomed_llama.eval.aggregate import clean_metrics
from biomed_llama.eval.config import GEN_SUITES, EvalConfig

# Lazy imports: torch is imported where memory is freed (models are loaded by harness / generate).


def _free_accelerator_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class ModelRuns:
    """One model's runs: its lm-eval backend and its generator, loaded on first use; one copy of the weights."""

    def __init__(self, cfg: EvalConfig, path: str, runs: list[harness.Run]) -> None:
        self.cfg, self.path = cfg, path
        self.needs_lm = any(r.suite not in GEN_SUITES for r in runs)
        self.lm: Any = None  # the lm-eval backend, loaded on first use
        self.generator: tuple[Any, Any] | None = None  # (model, tokenizer), loaded on first use

    def _lm(self):
        if self.lm is None:
            cfg = self.cfg
            self.lm = harness.load_lm(harness.hf_model_args(cfg, self.path), cfg.backend, cfg.token_budget)
        return self.lm

    def run(self, run: harness.Run, tm) -> dict[str, Any]:
        """lm-eval's results dict of one run (generation suites: shaped the same by eval/generate.py)."""
        cfg = self.cfg
        if run.suite in GEN_SUITES:
            if self.generator is None:  # the lm-eval backend's weights when this model has lm-eval runs too
                self.generator = generate.load_generator(cfg, self.path, self._lm().model if self.needs_lm else None)
            model, tok = self.generator
            return generate.run_generation(model, tok, cfg, run.suite, run.task, run.lm_eval_task)
        harness.set_suite(self._lm(), run.suite)
        return harness.run_one(self.lm, tm, run, cfg.limit)


# What `random.sample` says when a few-shot count exceeds its pool (lm-eval's sampler and ours both use it).
_POOL_TOO_SMALL = "Sample larger than population"


def _run(model_runs: ModelRuns, tm, run: harness.Run) -> dict[str, Any]:
    """One run; a few-shot count its pool cannot give is a ConfigError naming the param."""
    try:
        return model_runs.run(run, tm)
    except ValueError as e:
        if not str(e).startswith(_POOL_TOO_SMALL):
            raise
        raise ConfigError(
            f"eval.fewshot.{run.task}={run.shots}: {run.lm_eval_task} has fewer examples than that "
            f"to draw from (its few-shot pool, or its test set less the item itself); lower it "
            f"(the runs already done are kept)"
        ) from None


def evaluate_member(
    cfg: EvalConfig,
    tm,
    runs: list[harness.Run],
    folder: Path,
    out_dir: Path,
    metrics: dict[str, float],
    timing: dict[str, float],
    prog=None,
    bar=None,
    verdicts: dict[str, dict[int, bool]] | None = None,
    backends: dict[str, str] | None = None,
) -> None:
    """`runs` on one model folder: flat metrics into `metrics` (with `verdicts`, the contamination stage's, also over
    the uncontaminated items) and each run's wall time into `timing` (and, given `backends`, which code scored it:
    `harness.scoring_backend`) as it finishes; full results and samples under
    `out_dir`. The model is freed at the end, also on an error (one model in memory at a time: the paper profile
    evaluates many 7B models)."""
    model_runs = ModelRuns(cfg, str(folder), runs)
    try:
        for run in runs:
            if prog:
                prog.update(bar, description=f"{out_dir.name}: {run.key}")
            res = _run(model_runs, tm, run)
            flat = harness.flat_metrics(run, res)
            metrics.update(flat)
            metrics.update(
                clean_metrics(
                    run.key,
                    run.suite,
                    run.task,
                    res.get("samples", {}).get(run.lm_eval_task, []),
                    flat,
                    verdicts,
                    cfg.generation.medmcqa_split,
                )
            )
            timing[run.key] = res["biomed_wall_s"]
            if backends is not None:
                backends[run.key] = res["biomed_backend"]
            harness.save_run(out_dir, run, res)
            if prog:
                prog.advance(bar)
    finally:
        del model_runs
        _free_accelerator_memory()


def member_dir(cfg: EvalConfig, name: str, label: str) -> Path:
    """Where a model member's results go: `results_dir/<model>` (one member) or `results_dir/<model>/<seed-s>`."""
    return Path(cfg.results_dir) / name / label if label else Path(cfg.results_dir) / name


Checked = dict[str, tuple[list[tuple[str, Path]], dict[str, Any]]]  # model → (its members, their manifest records)


@dataclass
class Evaluation:
    """What the serial and the parallel way of running `evaluate`'s runs share."""

    cfg: EvalConfig
    checked: Checked
    """The models with a path: their members and the members' manifest records."""
    runs: list[harness.Run]
    """Every run, grouped by model (plan order); a seed-run folder's runs are run for each member."""
    verdicts: dict[str, dict[int, bool]] | None
    """The contamination stage's verdicts (None: full-set cells only)."""
    pending: dict[str, dict[str, dict[str, float]]]
    """Model → member → metrics of the runs finished so far, of the models not finished yet."""
    finish: Callable[[str], None]
    """Called once every run of a model is done (its metrics file, its manifest)."""
