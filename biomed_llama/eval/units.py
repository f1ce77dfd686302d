"""`eval.workers` > 1: `evaluate`'s (model member, suite) units in worker processes, longest first.

A unit is the runs of one model member (a HF folder: the model, or one seed run of it) in one suite; the
generation suites of a member (`instruct`, `finetune`) are one unit, one generator. Each unit runs exactly as the
serial path runs a member's runs (`members.evaluate_member`: the same scoring, metrics, clean metrics and saved files),
in a spawned process with its own copy of the model and its own lm-eval task manager, so no number depends on the
number of workers. The parent merges a member's units (its metrics and `timing.json` hold the serial run's keys),
and when every unit of a model is done it finishes the model as the serial path does (mean ± std over seeds,
metrics file, manifest).

Why: at a small model's size on a GPU, `evaluate`'s time is lm-eval's CPU-side work (building requests,
tokenizing, few-shot contexts), one core at a time; units on several cores overlap it.

On an error: the units not started are dropped, those running finish and are kept, and the first error is raised
(a worker's UserError arrives as the same one-line error); a model with a failed unit keeps the runs it finished
but gets no manifest, as in the serial path.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomed_llama.errors import UserError
from biomed_llama.eval import harness
from biomed_llama.eval.config import GEN_SUITES, EvalConfig
from biomed_llama.eval.members import Checked, Evaluation, evaluate_member, member_dir
from biomed_llama.fsutil import atomic_write_json
from biomed_llama.procs import die_with_parent

# Lazy imports: torch is imported in the workers only (the parent never loads a model).

# How much more a unit that lm-eval's stock code scores costs per weighted byte than a packed one. On one H100
# (bench/e2e.sh, issue 23) a stock-scored stand-in's zero-shot seed suite took ~104 s, a packed LLaMA's zero- and
# few-shot seed suite ~68 s; the (1 + shots) weighting below counts the latter at roughly 5 times the former's bytes
# (its 3-, 10- and 1-shot runs weigh 4, 11 and 2 times their test sets), so the stock one costs ~1.5 x 5 = ~8 times
# as much per byte: an estimate for the order of starting, not a fit.
STOCK_COST = 8.0


@dataclass(frozen=True)
class Unit:
    """The runs of one model member in one suite (all its generation suites: one unit), and where they go."""

    model: str
    label: str  # the member: "" (the model's folder itself) or `seed-<s>`
    folder: str
    out_dir: str
    runs: tuple[harness.Run, ...]
    order: int  # position in plan order: a member's units merge in it
    cost: float  # the estimate the units are started by, longest first

    @property
    def name(self) -> str:
        """`model[/seed-s] suite[+suite]`, as the progress lines name it."""
        suites = "+".join(dict.fromkeys(r.suite for r in self.runs))
        return f"{self.model}/{self.label} {suites}" if self.label else f"{self.model} {suites}"

    @property
    def generation(self) -> bool:
        """Whether this is a member's generation unit (started after every lm-eval unit)."""
        return self.runs[0].suite in GEN_SUITES


@dataclass
class UnitResult:
    """What a worker sends back: the flat metrics and per-run wall times of the runs it finished, and its error."""

    metrics: dict[str, float] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    backends: dict[str, str] = field(default_factory=dict)  # run key -> harness.scoring_backend
    wall_s: float = 0.0
    error: BaseException | None = None


def unit_cost(cfg: EvalConfig, runs: list[harness.Run], folder: str | Path) -> float:
    """A size class of a unit: its runs' test-set bytes, each times (1 + shots) (a k-shot context holds k more
    items); times `STOCK_COST` for an lm-eval unit that lm-eval's stock code scores. Only an order, no promise."""
    size = 0.0
    for r in runs:
        test = Path(cfg.output) / f"{r.task}.test.jsonl"
        size += (test.stat().st_size if test.is_file() else 0) * (1 + r.shots)
    stock = cfg.backend == "stock" or not harness.packable(folder)
    return size * (STOCK_COST if stock and runs[0].suite not in GEN_SUITES else 1.0)


def plan_units(cfg: EvalConfig, checked: Checked, runs: list[harness.Run]) -> list[Unit]:
    """Every (model member, suite) unit of `runs`: lm-eval units before generation units, each longest first."""
    units: list[Unit] = []
    for name, (members, _) in checked.items():
        mine = [r for r in runs if r.model == name]
        groups: dict[str, list[harness.Run]] = {}
        for r in mine:  # the generation suites of a member form one group
            groups.setdefault("generation" if r.suite in GEN_SUITES else r.suite, []).append(r)
        for label, folder in members:
            for group in groups.values():
                units.append(
                    Unit(
                        name,
                        label,
                        str(folder),
                        str(member_dir(cfg, name, label)),
                        tuple(group),
                        len(units),
                        unit_cost(cfg, group, folder),
                    )
                )
    return sorted(units, key=lambda u: (u.generation, -u.cost, u.order))


# The worker process's state, set once by `_start_worker` (a unit carries only its own runs).
_WORKER: dict[str, Any] = {}


def _start_worker(parent_pid: int, cfg: EvalConfig, verdicts: Any, no_bytecode: bool, threads: int) -> None:
    """A worker's set-up: die with the parent, no bytecode under the verified task folders (cli/evaluate.py), the
    config and contamination verdicts kept, this worker's share of the cores."""
    die_with_parent(parent_pid)
    sys.dont_write_bytecode = no_bytecode  # a spawned process does not inherit it
    import torch

    # On a GPU too: the work a worker does on the host (lm-eval's requests, tokenizing, the CPU side of each
    # forward) would otherwise start one intra-op thread per core in every worker (8 workers x 16 threads on 16 cores).
    torch.set_num_threads(threads)
    _WORKER.update(cfg=cfg, verdicts=verdicts)


def _portable(e: Exception, unit: Unit) -> BaseException:
    """`e` as it can travel back to the parent: a UserError as it is (its one line); another error with the worker's
    traceback as a note, and as a RuntimeError naming its type where it does not survive pickling."""
    if not isinstance(e, UserError):
        e.add_note(f"in the evaluate worker of {unit.name}:\n" + "".join(traceback.format_exception(e)).rstrip())
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        out = RuntimeError(f"{type(e).__qualname__}: {e}")
        for note in getattr(e, "__notes__", []):
            out.add_note(note)
        return out


def _evaluate_unit(unit: Unit) -> UnitResult:
    """Run one unit in a worker (a task manager per process, reused by its units as the serial path reuses one)."""
    cfg: EvalConfig = _WORKER["cfg"]
    out, t0 = UnitResult(), time.perf_counter()
    try:
        if "tm" not in _WORKER:
            _WORKER["tm"] = harness.task_manager(Path(cfg.output) / "tasks")
        evaluate_member(
            cfg,
            _WORKER["tm"],
            list(unit.runs),
            Path(unit.folder),
            Path(unit.out_dir),
            out.metrics,
            out.timing,
            verdicts=_WORKER["verdicts"],
            backends=out.backends,
        )
    except Exception as e:  # the runs it finished go back with the error
        out.error = _portable(e, unit)
    out.wall_s = time.perf_counter() - t0
    return out


class _Merge:
    """The parent's book-keeping: each member's metrics (in `pending`, as units finish), its timing.json once all its
    units are done, and `finish(model)` once all of a model's units are done, none failed."""

    def __init__(
        self, units: list[Unit], pending: dict[str, dict[str, dict[str, float]]], finish: Callable[[str], None]
    ) -> None:
        self.pending, self.finish = pending, finish
        self.left_member = Counter((u.model, u.label) for u in units)
        self.left_model = Counter(u.model for u in units)
        self.done: dict[tuple[str, str], list[tuple[Unit, UnitResult]]] = {}
        self.failed: set[str] = set()

    def add(self, unit: Unit, res: UnitResult) -> None:
        """Take one unit's result."""
        member = (unit.model, unit.label)
        parts = sorted([*self.done.get(member, []), (unit, res)], key=lambda p: p[0].order)
        self.done[member] = parts
        metrics = self.pending[unit.model][unit.label]
        metrics.clear()
        for _, r in parts:  # in plan order: the serial run's order of keys
            metrics.update(r.metrics)
        self.left_member[member] -= 1
        self.left_model[unit.model] -= 1
        if res.error is not None:
            self.failed.add(unit.model)
            return
        if self.left_member[member] == 0 and not any(r.error for _, r in parts):
            atomic_write_json(Path(unit.out_dir) / "timing.json", {k: v for _, r in parts for k, v in r.timing.items()})
        if self.left_model[unit.model] == 0 and unit.model not in self.failed:
            self.finish(unit.model)


def evaluate_units(ev: Evaluation) -> None:
    """Every unit of `ev.runs` in `eval.workers` spawned processes; each member's metrics fill
    `ev.pending[model][member]` as its units finish and `ev.finish(model)` follows a model's last unit (as
    `run._evaluate_serially` does)."""
    cfg, checked, verdicts, pending, finish = ev.cfg, ev.checked, ev.verdicts, ev.pending, ev.finish
    units = plan_units(cfg, checked, ev.runs)
    for name, (members, _) in checked.items():
        pending[name] = {label: {} for label, _ in members}
    merge = _Merge(units, pending, finish)
    for name, (members, _) in checked.items():  # a model with nothing to run is done (the serial path's empty files)
        if not merge.left_model[name]:
            for label, _ in members:
                atomic_write_json(member_dir(cfg, name, label) / "timing.json", {})
            finish(name)
    if not units:
        return
    procs = min(cfg.workers, len(units))
    threads = max(1, (os.cpu_count() or 1) // procs)
    error: BaseException | None = None
    with ProcessPoolExecutor(
        max_workers=procs,
        mp_context=multiprocessing.get_context("spawn"),  # no CUDA state (nor threads) inherited
        initializer=_start_worker,
        initargs=(os.getpid(), cfg, verdicts, sys.dont_write_bytecode, threads),
    ) as pool:
        futures: dict[Future[UnitResult], Unit] = {pool.submit(_evaluate_unit, u): u for u in units}
        finished = 0
        try:
            for fut in as_completed(futures):
                if fut.cancelled():
                    continue
                unit, finished = futures[fut], finished + 1
                try:
                    res = fut.result()
                except Exception as e:  # the worker died (e.g. killed for memory): the pool is broken
                    res = UnitResult(error=e)
                merge.add(unit, res)
                if cfg.progress:
                    state = "failed after" if res.error else "done in"
                    how = "+".join(sorted(set(res.backends.values()))) or "-"
                    print(
                        f"evaluate: {unit.name}: {state} {res.wall_s:.1f} s, {how} ({finished}/{len(units)})",
                        file=sys.stderr,
                    )
                if res.error is not None and error is None:
                    error = res.error
                    for f in futures:  # the units not started are dropped; those running finish and are kept
                        f.cancel()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    if error is not None:
        raise error
