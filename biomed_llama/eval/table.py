"""Render `reports/table.md`: the seed's two tables, each measured cell with the paper's value beside it.

Rows come from the flat metrics files (`seed.medqa4.3shot.acc`, …): the `seed` suite gives a
model's 0-shot and few-shot rows, `finetune` the fine-tune row of its paper model, `instruct` the
instructed table; `modern` gets its own table, marked as not the paper's method.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from biomed_llama.eval.config import EvalConfig

MAIN_COLUMNS = [("PubMed-A", ["pubmed_a"]), ("PubMed-C", ["pubmed_c"]), ("USMLE (4/5)", ["medqa4", "medqa5"]),
                ("MedMCQA", ["medmcqa"]), ("PubMedQA", ["pubmedqa"])]
INSTRUCT_COLUMNS = [("USMLE (4)", ["medqa4"]), ("MedMCQA", ["medmcqa"]), ("PubMedQA", ["pubmedqa"])]
MC_ONLY_COLUMNS = MAIN_COLUMNS[2:]


def paper_values() -> dict[str, list[dict[str, Any]]]:
    """The seed's published tables (`paper_values.json` in the package)."""
    return json.loads((resources.files("biomed_llama.eval") / "paper_values.json").read_text())


def _paper_row(rows: list[dict[str, Any]], model: str, method: str) -> dict[str, Any]:
    for r in rows:
        if r["model"] == model and r["method"] == method:
            return r
    return {}


def _cell_metric(task: str, suite: str, cfg: EvalConfig) -> str:
    if task.startswith("pubmed_"):
        return "word_perplexity"
    return "exact_match" if suite in ("finetune", "instruct") else cfg.mc_metric


def _measured(metrics: dict[str, float], suite: str, task: str, shots: int, cfg: EvalConfig) -> float | None:
    return metrics.get(f"{suite}.{task}.{shots}shot.{_cell_metric(task, suite, cfg)}")


def _fmt(v: float | None, task: str) -> str:
    if v is None:
        return "–"
    return f"{v:.4f}" if task.startswith("pubmed_") or v < 10 else f"{v:.2f}"


def _cell(tasks: list[str], ours: dict[str, float | None], paper: dict[str, Any], shots: dict[str, int]) -> str:
    """`ours (paper: theirs)` for one column; several tasks (USMLE 4/5) joined by ` / `."""
    if all(ours.get(t) is None for t in tasks):
        return "–"

    def shot(t: str) -> str:
        return f" ({shots[t]})" if shots.get(t) else ""

    mine = " / ".join(_fmt(ours.get(t), t) + shot(t) for t in tasks)
    theirs = [paper.get(t) for t in tasks]
    if all(x is None for x in theirs):
        return mine
    pm = paper.get("pm", {})
    ref = " / ".join("–" if x is None else f"{x}" + (f"±{pm[t]}" if t in pm else "") for t, x in zip(tasks, theirs))
    return f"{mine} (paper: {ref})"


def _table(columns, rows: list[tuple[str, str, dict[str, float | None], dict[str, Any], dict[str, int]]]) -> list[str]:
    head = ["Model", "Method"] + [c for c, _ in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, method, ours, paper, shots in rows:
        cells = [_cell(tasks, ours, paper, shots) for _, tasks in columns]
        lines.append("| " + " | ".join([label, method] + cells) + " |")
    return lines


def _collect(cfg: EvalConfig, metrics: dict[str, dict[str, float]], suite: str, fewshot: bool,
             tasks: list[str]) -> tuple[dict[str, float | None], dict[str, int]]:
    ours: dict[str, float | None] = {}
    shots: dict[str, int] = {}
    for name, m in metrics.items():
        for t in tasks:
            if fewshot and t not in cfg.fewshot:
                continue  # perplexity has no few-shot setting
            k = cfg.fewshot[t] if fewshot else 0
            v = _measured(m, suite, t, k, cfg)
            if v is not None:
                ours[t] = v
                if fewshot:
                    shots[t] = k
    return ours, shots


def render_table(cfg: EvalConfig, metrics: dict[str, dict[str, float]]) -> str:
    """The Markdown report: main table, instructed table, and the modern-suite table when run."""
    paper = paper_values()
    all_tasks = [t for _, ts in MAIN_COLUMNS for t in ts]
    main, instructed, modern = [], [], []
    for name, m in cfg.models.items():
        if name not in metrics:
            continue
        label = f"{name} → {m.paper_row}"
        one = {name: metrics[name]}
        for method, few in (("0-shot", False), ("few-shot", True)):
            if "seed" in m.suites:
                ours, shots = _collect(cfg, one, "seed", few, all_tasks)
                if ours:
                    main.append((label, method, ours, _paper_row(paper["main"], m.paper_row, method), shots))
            if "modern" in m.suites:
                ours, shots = _collect(cfg, one, "modern", few, all_tasks)
                if ours:
                    modern.append((label, method, ours, {}, shots))
        if "instruct" in m.suites:
            ours, _ = _collect(cfg, one, "instruct", False, all_tasks)
            if ours:
                instructed.append((label, "instructed", ours, _paper_row(paper["instructed"], m.paper_row, "instructed"), {}))
    # Fine-tune rows: one per paper model, cells gathered from its task fine-tunes.
    ft_rows: dict[str, list[str]] = {}
    for name, m in cfg.models.items():
        if "finetune" in m.suites and name in metrics:
            ft_rows.setdefault(m.paper_row, []).append(name)
    for paper_row, names in ft_rows.items():
        ours, _ = _collect(cfg, {n: metrics[n] for n in names}, "finetune", False, all_tasks)
        if ours:
            main.append((f"{', '.join(names)} → {paper_row}", "fine-tune", ours,
                         _paper_row(paper["main"], paper_row, "fine-tune"), {}))

    mc = "accuracy" if cfg.mc_metric == "acc" else "length-normalised accuracy (acc_norm)"
    out = ["# Results", "",
           f"Measured on this run (profile cells: perplexity = word perplexity; multiple choice = {mc}; "
           "instructed and fine-tune = exact match of greedy generation), the paper's value in brackets. "
           "A row `name → paper model` sets our model beside that paper row.", ""]
    out += _table(MAIN_COLUMNS, main) if main else ["(no seed-suite or fine-tune results)"]
    out += ["", "## Instruction tuning", ""]
    out += _table(INSTRUCT_COLUMNS, instructed) if instructed else ["(no instruct-suite results)"]
    if modern:
        out += ["", "## lm-eval built-in style (letters scored) — NOT the paper's method", "",
                "The prompt style of lm-eval 0.4's `medqa_4options` / `medmcqa` / `pubmedqa`, run on the same "
                "local files; the paper has no such column, so there are no paper values.", ""]
        out += _table(MC_ONLY_COLUMNS, modern)
    return "\n".join(out) + "\n"
