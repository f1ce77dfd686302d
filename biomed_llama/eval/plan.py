"""Which evaluation runs the config asks for: (model, suite, task, shots) and their lm-eval task names.

Planning only, no I/O: prepare-eval (which tasks and few-shot pools to write) and the harness (what
to run) both read it, so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from biomed_llama.eval.config import MC_TASKS, PPL_TASKS, EvalConfig

# Tasks of each suite (instruct: the instructed table's three columns).
SUITE_TASKS = {
    "seed": PPL_TASKS + MC_TASKS,
    "modern": MC_TASKS,
    "instruct": ("medqa4", "medmcqa", "pubmedqa"),
    "instruct_letters": ("medqa4", "medmcqa", "pubmedqa"),
    "finetune": MC_TASKS,
}
# Suites whose few-shot setting is run (instruct and fine-tune rows are zero-shot by definition).
FEWSHOT_SUITES = ("seed", "modern")


def task_name(suite: str, task: str) -> str:
    """The lm-eval task name of a (suite, task), e.g. `biomed_seed_medqa4`."""
    return f"biomed_{suite}_{task}"


@dataclass(frozen=True)
class Run:
    """One lm-eval call: a model, a suite's task, a number of few-shot examples."""

    model: str
    suite: str
    task: str
    shots: int

    @property
    def key(self) -> str:
        """The prefix of this run's metric names, e.g. `seed.medqa4.3shot`."""
        return f"{self.suite}.{self.task}.{self.shots}shot"

    @property
    def lm_eval_task(self) -> str:
        """The lm-eval task name, e.g. `biomed_seed_medqa4`."""
        return task_name(self.suite, self.task)


def plan_runs(cfg: EvalConfig) -> list[Run]:
    """Every run the config asks for, grouped by model (in config order)."""
    runs = []
    for name, m in cfg.models.items():
        for suite in m.suites:
            for task in SUITE_TASKS[suite]:
                if m.tasks is not None and task not in m.tasks:
                    continue
                shots = [0] if "zero" in cfg.shots or suite not in FEWSHOT_SUITES else []
                if "few" in cfg.shots and suite in FEWSHOT_SUITES and task in cfg.fewshot:
                    shots.append(cfg.fewshot[task])
                runs += [Run(name, suite, task, k) for k in shots]
    return runs
