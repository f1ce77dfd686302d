"""Render `reports/table.md`: both of the seed's tables, every one of their 54 cells, each beside ours.

Every row of the seed's tables is printed, in the seed's order (`paper_values.json`), whether or not
a model of ours stands in for it; a cell with a paper value and nothing measured says `not
measured`. Our models join the rows by `eval.models.<name>.paper_row` and the method their suite
gives: `seed` 0-shot and few-shot, `finetune` the fine-tune row (cells gathered from the task
fine-tunes of that paper model; mean ± sample std over seeds where a task has several), `instruct`
the instructed table; the `random` pseudo-model (chance accuracy of the test sets) the Random row.
A measured combination the seed has no row for (e.g. GPT-Neo few-shot) is added after the seed's
rows. `modern` gets its own table, marked as not the paper's method. The header names the profile and
says whether the outputs behind the cells (each evaluated model's folder and its eval results) were made
in an environment that differs from the lock (their manifests' `environment.lock.drift`).

Where the `contamination` stage's verdicts were read (`eval.contamination`), every multiple-choice cell
also shows its value on the uncontaminated test items and their count (`clean: 0.2571 on 35`), after the
paper's value, which belongs to the full set only.

`table_cells` gives the same cells as flat `section/model/method/ours/task` keys for
`metrics/table.json` (and the accuracy cells' `…/clean`), so `dvc metrics diff` compares them cell by cell;
the clean counts and the generation cells' clean values go beside it, to `metrics/table.details.json`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from biomed_llama.eval.aggregate import CLEAN, CLEAN_ITEMS
from biomed_llama.eval.config import GEN_SUITES, EvalConfig
from biomed_llama.fsutil import sha256_file
from biomed_llama.provenance import MANIFEST, lock_drift

MAIN_COLUMNS = [
    ("PubMed-A", ["pubmed_a"]),
    ("PubMed-C", ["pubmed_c"]),
    ("USMLE (4/5)", ["medqa4", "medqa5"]),
    ("MedMCQA", ["medmcqa"]),
    ("PubMedQA", ["pubmedqa"]),
]
INSTRUCT_COLUMNS = [("USMLE (4)", ["medqa4"]), ("MedMCQA", ["medmcqa"]), ("PubMedQA", ["pubmedqa"])]
MC_ONLY_COLUMNS = MAIN_COLUMNS[2:]
TASKS = [t for _, ts in MAIN_COLUMNS for t in ts]
RANDOM = "random"
"""The metrics name of the chance-accuracy pseudo-model (`metrics/eval/random.json`)."""
# Which suite (and whether few-shot) each of the seed's methods comes from.
METHOD_SUITE = {
    "-": ("random", False),
    "0-shot": ("seed", False),
    "few-shot": ("seed", True),
    "fine-tune": ("finetune", False),
    "instructed": ("instruct", False),
}


def paper_values() -> dict[str, list[dict[str, Any]]]:
    """The seed's published tables (`paper_values.json` in the package)."""
    return json.loads((resources.files("biomed_llama.eval") / "paper_values.json").read_text())


def paper_cell_count() -> int:
    """How many numeric cells the seed's two tables have (54: USMLE 4 and 5 apart, ± cells once)."""
    return sum(1 for rows in paper_values().values() for r in rows for t in TASKS if t in r)


@dataclass
class Measured:
    """One measured cell: the value (a mean over seeds where there are several), its spread and count."""

    value: float
    std: float | None = None
    n: int | None = None
    shots: int | None = None
    mark: str = ""
    clean: float | None = None
    """The value over the uncontaminated test items (None: not computed, or no such item)."""
    clean_items: int | None = None
    """How many uncontaminated test items the cell has (None: the contamination verdicts were not read)."""

    def text(self, task: str) -> str:
        """The cell's own part, e.g. `0.4072±0.0120 (n=3)`, `0.3668 (3)`, `15.7774`."""
        v = self.value
        s = f"{v:.4f}" if task.startswith("pubmed_") or v < 10 else f"{v:.2f}"
        if self.std is not None:
            s += f"±{self.std:.4f}"
        if self.n is not None and self.n > 1:
            s += f" (n={self.n})"
        if self.shots:
            s += f" ({self.shots})"
        return s + self.mark

    def clean_text(self, task: str) -> str:
        """The clean-subset part, e.g. `0.2571 on 35` (`– on 0` when every item is contaminated)."""
        v = "–" if self.clean is None or math.isnan(self.clean) else Measured(self.clean).text(task)
        return f"{v} on {self.clean_items}"


@dataclass
class Row:
    """One table row: the paper's model and method, the names of our models in it, its cells and the paper's."""

    model: str
    method: str
    ours: list[str]
    cells: dict[str, Measured] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)


def _metric(suite: str, task: str, m: dict[str, float], cfg: EvalConfig) -> tuple[str, str]:
    """(metric name, mark) a cell reads: word perplexity, generation exact match, or the MC metric."""
    if task.startswith("pubmed_"):
        return "word_perplexity", ""
    if suite in ("finetune", "instruct"):  # the original's scoring: generation + exact match (evaluation/main.py)
        return "exact_match", ""
    return ("acc" if suite == RANDOM else cfg.mc_metric), ""


def measured(m: dict[str, float], suite: str, task: str, shots: int, cfg: EvalConfig) -> Measured | None:
    """The cell of `task` at `shots` of `suite` in one model's flat metrics, or None if absent."""
    metric, mark = _metric(suite, task, m, cfg)
    key = f"{suite}.{task}.{shots}shot.{metric}"
    if key not in m:
        return None
    n = m.get(f"{key}_n")
    items = m.get(f"{suite}.{task}.{shots}shot.{CLEAN_ITEMS}")
    return Measured(
        m[key],
        m.get(f"{key}_std"),
        None if n is None else int(n),
        shots or None,
        mark,
        m.get(f"{key}{CLEAN}"),
        None if items is None else int(items),
    )


def _cells(cfg: EvalConfig, ms: list[dict[str, float]], method: str) -> dict[str, Measured]:
    suite, few = METHOD_SUITE[method]
    fewshot: dict[str, int] = dict(cfg.fewshot.items())  # keyed by every task name (TASKS holds perplexity's too)
    out = {}
    for t in TASKS:
        if few and t not in fewshot:
            continue  # perplexity has no few-shot setting
        for m in ms:
            got = measured(m, suite, t, fewshot[t] if few else 0, cfg)
            if got is not None:
                out[t] = got
    return out


def our_rows(cfg: EvalConfig, metrics: dict[str, dict[str, float]], paper_model: str, method: str) -> list[Row]:
    """Our rows standing in for (`paper_model`, `method`): one per model, fine-tune models gathered into one."""
    suite, _ = METHOD_SUITE[method]
    if suite == RANDOM:
        return (
            [Row(paper_model, method, [RANDOM], _cells(cfg, [metrics[RANDOM]], method))]
            if paper_model == "Random" and RANDOM in metrics
            else []
        )
    names = [n for n, m in cfg.models.items() if m.paper_row == paper_model and suite in m.suites and n in metrics]
    groups = [names] if suite == "finetune" and names else [[n] for n in names]
    rows = [Row(paper_model, method, g, _cells(cfg, [metrics[n] for n in g], method)) for g in groups]
    return [r for r in rows if r.cells]


def table_rows(cfg: EvalConfig, metrics: dict[str, dict[str, float]], section: str) -> list[Row]:
    """Every row of one of the seed's tables (`main` or `instructed`), ours beside them, then extra rows of ours."""
    rows: list[Row] = []
    seen = set()
    for p in paper_values()[section]:
        seen.add((p["model"], p["method"]))
        mine = our_rows(cfg, metrics, p["model"], p["method"]) or [Row(p["model"], p["method"], [])]
        for r in mine:
            r.paper = p
        rows += mine
    methods = ["instructed"] if section == "instructed" else ["0-shot", "few-shot", "fine-tune"]
    for paper_model in dict.fromkeys(m.paper_row for m in cfg.models.values()):
        for method in methods:
            if (paper_model, method) not in seen:
                rows += our_rows(cfg, metrics, paper_model, method)
    return rows


def _cell(tasks: list[str], row: Row) -> str:
    """`ours (paper: theirs) · clean: …` for one column; several tasks (USMLE 4/5) joined by ` / `."""
    theirs = [row.paper.get(t) for t in tasks]
    mine = [row.cells.get(t) for t in tasks]
    if all(x is None for x in mine):
        ours = "not measured" if any(x is not None for x in theirs) else "–"
    else:
        ours = " / ".join("–" if x is None else x.text(t) for t, x in zip(tasks, mine, strict=True))
    clean = ""
    if any(x is not None and x.clean_items is not None for x in mine):
        clean = " · clean: " + " / ".join(
            "–" if x is None or x.clean_items is None else x.clean_text(t) for t, x in zip(tasks, mine, strict=True)
        )
    if all(x is None for x in theirs):
        return ours + clean
    pm = row.paper.get("pm", {})
    ref = " / ".join(
        "–" if x is None else f"{x}" + (f"±{pm[t]}" if t in pm else "") for t, x in zip(tasks, theirs, strict=True)
    )
    return f"{ours} (paper: {ref}){clean}"


def _markdown(columns, rows: list[Row]) -> list[str]:
    head = ["Model", "Method", "Ours"] + [c for c, _ in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_cell(tasks, r) for _, tasks in columns]
        lines.append("| " + " | ".join([r.model, r.method, ", ".join(r.ours) or "—"] + cells) + " |")
    return lines


def _modern_rows(cfg: EvalConfig, metrics: dict[str, dict[str, float]]) -> list[Row]:
    rows = []
    fewshot: dict[str, int] = dict(cfg.fewshot.items())  # keyed by every task name (TASKS holds perplexity's too)
    for name, m in cfg.models.items():
        if "modern" in m.suites and name in metrics:
            for method, few in (("0-shot", False), ("few-shot", True)):
                cells = {
                    t: x
                    for t in TASKS
                    if (not few or t in fewshot)
                    for x in [measured(metrics[name], "modern", t, fewshot.get(t, 0) if few else 0, cfg)]
                    if x
                }
                if cells:
                    rows.append(Row(m.paper_row, method, [name], cells))
    return rows


def generation_note(cfg: EvalConfig) -> str:
    """The line naming what the fine-tune and instructed cells measured: each `eval.generation` choice that the
    released evaluation/main.py made otherwise, labelled released or corrected (configs/paper.yaml's DEPARTS)."""
    gen = cfg.generation
    split = (
        "MedMCQA on the validation split (a correction; released: the test split, main.py:119, whose "
        "withheld answers make option D every target)"
        if gen.medmcqa_split == "validation"
        else "MedMCQA on the test split as released (main.py:119: withheld answers, option D every target, "
        "so its cells are agreement with option D)"
    )
    given = (
        "the fine-tuned models given the prompt alone (a correction; released: prompt + gold answer + </s>, "
        "mcqa_dataset.py:124-135)"
        if gen.finetune_input == "prompt"
        else "the fine-tuned models given prompt + gold answer + </s> as released (mcqa_dataset.py:124-135, so "
        "their cells are not answer accuracy)"
    )
    return f"Fine-tune and instructed cells: {split}; {given}."


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def recorded_drift(env: dict[str, Any]) -> list[str] | None:
    """What a manifest's environment differed in from its lock: its recorded `lock.drift`; for a manifest
    written before that was recorded, its packages compared with the lock file if that is unchanged (same
    sha256); None when it cannot be told."""
    lock = env.get("lock") or {}
    if "drift" in lock:
        return lock["drift"]
    path = Path(lock.get("path") or "")
    if lock.get("sha256") and path.is_file() and sha256_file(path) == lock["sha256"] and env.get("packages"):
        return lock_drift(path, env["packages"])
    return None


def environment_outputs(cfg: EvalConfig, metrics: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """The manifests behind the measured cells, by folder: each measured model's eval results
    (`<results_dir>/<name>`) and every input recorded there with a manifest (the model folders, its seed
    runs, the prepared benchmarks). External models have none and are not listed."""
    out: dict[str, dict[str, Any]] = {}
    for name in cfg.models:
        folder = Path(cfg.results_dir) / name
        manifest = _read(folder / MANIFEST) if name in metrics else None
        if manifest is None:
            continue
        out[str(folder)] = manifest
        for raw, rec in (manifest.get("inputs") or {}).items():
            if isinstance(rec, dict) and "manifest_sha256" in rec and raw not in out:
                got = _read(Path(raw) / MANIFEST)
                if got is not None:
                    out[raw] = got
    return out


def environment_note(cfg: EvalConfig, metrics: dict[str, dict[str, float]]) -> list[str]:
    """Header lines: whether the outputs behind the cells came from an environment that differs from the lock.

    Grouped by lock and drift, so a GPU run with its own torch reads as one line listing what differed
    and which outputs it made; nothing when no manifest is there to say (nothing measured yet).
    """
    outputs = environment_outputs(cfg, metrics)
    if not outputs:
        return []
    groups: dict[tuple[str, tuple[str, ...] | None], list[str]] = {}
    for folder, manifest in outputs.items():
        env = manifest.get("environment") or {}
        drift = recorded_drift(env)
        lock = (env.get("lock") or {}).get("path") or "?"
        groups.setdefault((lock, None if drift is None else tuple(drift)), []).append(
            f"`{folder}` ({manifest.get('stage', '?')})"
        )
    differ = {k: v for k, v in groups.items() if k[1] is None or k[1]}
    if not differ:
        locks = ", ".join(sorted({f"`{lock}`" for lock, _ in groups}))
        return [
            f"Environment: all {len(outputs)} outputs behind these cells (evaluated models and their eval "
            f"results) were made in an environment that matches its lock ({locks}).",
            "",
        ]
    n = sum(len(v) for v in differ.values())
    lines = [
        f"**Environment differs from the lock**: {n} of {len(outputs)} outputs behind these cells were made "
        "in an environment other than the lock's (their manifests record the packages that ran; "
        "`biomed-llama env check` compares one):",
        "",
    ]
    for (lock, packages), folders in differ.items():
        if packages is None:
            what = "not known (the manifest names no drift and its lock file changed or is absent)"
        else:
            what = "; ".join(packages[:8]) + (f"; … {len(packages) - 8} more" if len(packages) > 8 else "")
        lines.append(f"- against `{lock}`: {what}. Outputs: {', '.join(folders)}")
    return lines + [""]


def render_table(cfg: EvalConfig, metrics: dict[str, dict[str, float]], profile: str = "") -> str:
    """The Markdown report: the seed's main table and instructed table (all rows), and the modern-suite table when run."""
    mc = "accuracy" if cfg.mc_metric == "acc" else "length-normalised accuracy (acc_norm)"
    out = ["# Results", ""]
    if profile:
        out += [
            f"Every measured number below was produced by the `{profile}` profile (`profile` in its params "
            "file; each trained model's manifest records it too).",
            "",
        ]
    out += environment_note(cfg, metrics)
    out += [
        f"Measured cells: perplexity = word perplexity; multiple choice = {mc}; fine-tune and instructed = "
        "exact match of greedy generation; Random = chance accuracy of the test sets. The paper's value is "
        "in brackets; `not measured` = no model of ours was evaluated for that row (reference models: set "
        "`eval.models.<name>.path`). Fine-tune cells over several seeds: mean ± sample std (n seeds).",
        "",
    ]
    out += [generation_note(cfg), ""]
    if any(
        x.clean_items is not None
        for section in ("main", "instructed")
        for r in table_rows(cfg, metrics, section)
        for x in r.cells.values()
    ):
        out += [
            "`clean: v on k` = the same score over the k test items none of whose word 13-grams (lm-eval's "
            "normalisation; n = `contamination.ngram`) occurs in the pretraining corpus (stage `contamination`, "
            f"verdicts in `{cfg.contamination}`); the paper's value belongs to the full-set number only.",
            "",
        ]
    out += _markdown(MAIN_COLUMNS, table_rows(cfg, metrics, "main"))
    out += ["", "## Instruction tuning", ""]
    out += _markdown(INSTRUCT_COLUMNS, table_rows(cfg, metrics, "instructed"))
    modern = _modern_rows(cfg, metrics)
    if modern:
        out += [
            "",
            "## lm-eval built-in style (letters scored) — NOT the paper's method",
            "",
            "The prompt style of lm-eval 0.4's `medqa_4options` / `medmcqa` / `pubmedqa`, run on the same "
            "local files; the paper has no such column, so there are no paper values.",
            "",
        ]
        out += _markdown(MC_ONLY_COLUMNS, modern)
    return "\n".join(out) + "\n"


def table_cells(
    cfg: EvalConfig, metrics: dict[str, dict[str, float]], details: dict[str, float] | None = None
) -> dict[str, float]:
    """Every measured cell of both tables as `section/model/method/ours/task` → value (and `…/std`), and the
    accuracy cells' (Random, 0-shot, few-shot) value on the uncontaminated items as `…/clean`.

    What `dvc metrics show` lists stays a headline (biomed_llama/stage_metrics.py): the clean items' count of
    every cell (`…/clean_items`; per task it is the contamination stage's `clean`) and the generation cells'
    clean value go to `details` when it is given."""
    out: dict[str, float] = {}
    details = {} if details is None else details
    for section in ("main", "instructed"):
        for r in table_rows(cfg, metrics, section):
            for t, x in r.cells.items():
                key = f"{section}/{r.model}/{r.method}/{'+'.join(r.ours)}/{t}"
                out[key] = x.value
                if x.std is not None:
                    out[f"{key}/std"] = x.std
                if x.clean_items is not None and x.clean is not None:
                    (details if METHOD_SUITE[r.method][0] in GEN_SUITES else out)[f"{key}/clean"] = x.clean
                    details[f"{key}/clean_items"] = x.clean_items
    return out
