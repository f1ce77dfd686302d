"""`eval.workers`: the (model member, suite) units in worker processes give the serial run's numbers and files, keep
what finished when one fails, and start the longest first."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest

from biomed_llama.errors import ConfigError, UserError
from biomed_llama.eval.config import EvalModel
from biomed_llama.eval.harness import Run, plan_runs
from biomed_llama.eval.run import evaluate
from biomed_llama.eval.units import STOCK_COST, Unit, _portable, plan_units, unit_cost
from biomed_llama.provenance import verify, write_manifest


def _cfg(prepared, out: Path, models: dict[str, EvalModel], **over):
    return prepared.model_copy(update={
        "limit": 4, "models": models, "metrics_dir": str(out / "metrics"), "table_metrics": str(out / "table.json"),
        "results_dir": str(out / "results"), "table": str(out / "table.md"), "figure": str(out / "loss.png"), **over})


def _verdicts(prepared, folder: Path) -> str:
    """A contamination output calling every third test item contaminated (the clean metrics go through the workers)."""
    folder.mkdir()
    tasks = ("medqa4", "medqa5", "medmcqa", "pubmedqa")
    for task in tasks:
        n = sum(1 for _ in (Path(prepared.output) / f"{task}.test.jsonl").open())
        (folder / f"{task}.json").write_text(json.dumps([{"idx": i, "contaminated": i % 3 == 0} for i in range(n)]))
    (folder / "summary.json").write_text(json.dumps({"tasks": {t: {} for t in tasks}}))
    write_manifest(folder, stage="contamination", params={})
    return str(folder)


def _saved(results: Path) -> dict[str, object]:
    """Every saved run of a results folder: its lm-eval `results` section and its samples file, by relative path."""
    out: dict[str, object] = {}
    for f in sorted(results.rglob("*.results.json")):
        out[str(f.relative_to(results))] = json.loads(f.read_text())["results"]
    for f in sorted(results.rglob("*.samples.jsonl")):
        out[str(f.relative_to(results))] = f.read_text()
    return out


def test_workers_give_the_serial_runs_numbers_and_files(prepared, eval_root, tmp_path, capfd):
    path = str(eval_root / "model")
    models = {
        "tiny": EvalModel(path=path, paper_row="BioMed-LLaMA-7B", suites=["seed"], tasks=["pubmed_a", "medqa4"]),
        "tiny-modern": EvalModel(path=path, paper_row="LLaMA-7B", suites=["modern"], tasks=["medmcqa"]),
        # generation and log-likelihood suites of one model: one loaded model serially, two units here
        "tiny-instruct": EvalModel(path=path, paper_row="BioMed-LLaMA-7B", suites=["instruct", "instruct_letters"],
                                   tasks=["medqa4"]),
        "tiny-ft-seeds": EvalModel(path=str(eval_root / "ft-seeds"), paper_row="LLaMA-7B", suites=["finetune"],
                                   tasks=["medqa4"]),
    }
    verdicts = _verdicts(prepared, tmp_path / "contamination")
    got = {}
    for workers in (1, 2):
        cfg = _cfg(prepared, tmp_path / f"w{workers}", models, workers=workers, contamination=verdicts,
                   progress=workers > 1)
        got[workers] = (cfg, evaluate(cfg, "test"))
    # one line per finished unit (the workers' own progress bars may share a terminal line with one)
    lines = re.findall(r"evaluate: (\S+ \S+): done in [0-9.]+ s, (\S+) \((\d)/6\)", capfd.readouterr().err)
    assert sorted(n for _, _, n in lines) == list("123456")
    # each line names the code that scored the unit: the tiny LLaMA packed, the generation suites generated
    assert {u: how for u, how, _ in lines} == {
        "tiny seed": "packed", "tiny-modern modern": "packed", "tiny-instruct instruct": "generate",
        "tiny-instruct instruct_letters": "packed", "tiny-ft-seeds/seed-1 finetune": "generate",
        "tiny-ft-seeds/seed-2 finetune": "generate"}
    (serial_cfg, serial), (cfg, parallel) = got[1], got[2]
    assert parallel == serial
    assert "seed.medqa4.3shot.acc_clean" in serial["tiny"] and "finetune.medqa4.0shot.exact_match_std" in \
        serial["tiny-ft-seeds"] and "instruct.medqa4.0shot.exact_match" in serial["tiny-instruct"]
    a, b = Path(serial_cfg.results_dir), Path(cfg.results_dir)
    for f in a.rglob("*.results.json"):  # the serial path records it too
        assert json.loads(f.read_text())["biomed_backend"] == ("generate" if "instruct." in f.name or
                                                               "finetune." in f.name else "packed"), f
    assert _saved(b) == _saved(a) and len(_saved(a)) == 2 * 9  # 9 runs (one per seed member), results + samples
    timings = sorted(str(f.relative_to(a)) for f in a.rglob("timing.json"))
    assert timings == sorted(str(f.relative_to(b)) for f in b.rglob("timing.json")) and len(timings) == 5
    for t in timings:
        assert json.loads((b / t).read_text()).keys() == json.loads((a / t).read_text()).keys(), t
    for name in models:
        assert verify(b / name) == []  # every model finished: its manifest, its outputs as recorded
        recorded = json.loads((b / name / "manifest.json").read_text())["params"]["eval"]
        assert recorded["workers"] == 2  # speed only, recorded as the other speed keys are
    assert Path(cfg.table).read_text() == Path(serial_cfg.table).read_text().replace(str(a), str(b))
    for f in ("metrics", "table.json"):  # the metrics files and the table's cells, byte for byte
        left, right = Path(serial_cfg.metrics_dir).parent / f, Path(cfg.metrics_dir).parent / f
        pairs = [(p, right / p.relative_to(left)) for p in sorted(left.rglob("*.json"))] if left.is_dir() else \
            [(left, right)]
        assert pairs and all(p.read_bytes() == q.read_bytes() for p, q in pairs), f


def test_a_failing_unit_keeps_the_others_and_raises_its_one_line_error(prepared, eval_root, tmp_path):
    path = str(eval_root / "model")
    models = {"a": EvalModel(path=path, paper_row="BioMed-LLaMA-7B", suites=["seed"], tasks=["medqa4"]),
              "b": EvalModel(path=path, paper_row="LLaMA-7B", suites=["seed"], tasks=["pubmedqa"])}
    # PubMedQA draws its examples from its own test items less the one asked: 30 cannot be had
    fewshot = {"medqa4": 3, "medqa5": 3, "medmcqa": 10, "pubmedqa": 30}
    cfg = _cfg(prepared, tmp_path, models, workers=2, fewshot=fewshot, limit=2)
    with pytest.raises(ConfigError) as e:
        evaluate(cfg, "demo")
    assert e.value.exit_code == 2 and "\n" not in str(e.value)  # the worker's error, as the serial path raises it
    assert str(e.value).startswith("eval.fewshot.pubmedqa=30: biomed_seed_pubmedqa has fewer examples than that")
    kept = {n: json.loads((tmp_path / "metrics" / f"{n}.json").read_text()) for n in "ab"}
    assert {k.rsplit(".", 1)[0] for k in kept["a"]} == {"seed.medqa4.0shot", "seed.medqa4.3shot"}
    assert {k.rsplit(".", 1)[0] for k in kept["b"]} == {"seed.pubmedqa.0shot"}  # its zero-shot run is kept
    assert verify(tmp_path / "results" / "a") == []  # the other unit finished: its model is complete
    assert not (tmp_path / "results" / "b" / "manifest.json").exists()  # b's results are not complete
    assert not (tmp_path / "results" / "b" / "timing.json").exists()
    assert "PubMedQA" in (tmp_path / "table.md").read_text()


def _hf_folder(folder: Path, model_type: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


def test_units_start_longest_first_lm_eval_before_generation(prepared, tmp_path):
    # GPT-NeoX: a model type the packed backend does not pack (GPT-Neo and GPT-2 it does since issue 23).
    llama, neo = _hf_folder(tmp_path / "llama", "llama"), _hf_folder(tmp_path / "neo", "gpt_neox")
    seeds = tmp_path / "ft"
    for s in (1, 2):
        _hf_folder(seeds / f"seed-{s}", "llama")
    models = {
        "ft": EvalModel(path=str(seeds), paper_row="LLaMA-7B", suites=["finetune"], tasks=["medqa4"]),
        "p": EvalModel(path=str(llama), paper_row="BioMed-LLaMA-7B", suites=["instruct", "seed", "modern"]),
        "neo": EvalModel(path=str(neo), paper_row="GPT-Neo (2.7B)", suites=["seed"], tasks=["medqa4"]),
    }
    cfg = prepared.model_copy(update={"models": models, "shots": ["zero"]})
    checked = {"ft": ([("seed-1", seeds / "seed-1"), ("seed-2", seeds / "seed-2")], {}),
               "p": ([("", llama)], {}), "neo": ([("", neo)], {})}
    units = plan_units(cfg, checked, plan_runs(cfg))
    names = [u.name for u in units]
    assert sorted(names) == sorted(["ft/seed-1 finetune", "ft/seed-2 finetune", "p instruct", "p seed", "p modern",
                                    "neo seed"])
    assert [u.generation for u in units] == [False] * 3 + [True] * 3
    size = {t: (Path(cfg.output) / f"{t}.test.jsonl").stat().st_size for t in
            ("pubmed_a", "pubmed_c", "medqa4", "medqa5", "medmcqa", "pubmedqa")}
    costs = {u.name: u.cost for u in units}
    assert costs["p seed"] == sum(size.values())
    assert costs["p modern"] == sum(size.values()) - size["pubmed_a"] - size["pubmed_c"]
    assert costs["neo seed"] == STOCK_COST * size["medqa4"] == STOCK_COST * costs["ft/seed-1 finetune"]  # stock-scored
    assert unit_cost(cfg, [Run("p", "seed", "medqa4", 3)], llama) == 4 * size["medqa4"]  # a 3-shot context: 4 items
    for packed_type in ("gpt_neo", "gpt2"):
        assert unit_cost(cfg, [Run("neo", "seed", "medqa4", 0)], _hf_folder(tmp_path / packed_type, packed_type)) == \
            size["medqa4"]
    lm_eval = [u.cost for u in units[:3]]
    assert lm_eval == sorted(lm_eval, reverse=True) and units[3].cost >= units[4].cost >= units[5].cost
    assert {u.out_dir for u in units if u.model == "ft"} == {f"{cfg.results_dir}/ft/seed-1", f"{cfg.results_dir}/ft/seed-2"}
    assert all(r.model == u.model for u in units for r in u.runs)
    assert sum(len(u.runs) for u in units) == len(plan_runs(cfg)) + 1  # the seed folder's runs once per member


class _Unpicklable(Exception):
    def __init__(self, a: str, b: int) -> None:  # pickling calls cls(*args): one arg, not two
        super().__init__(f"{a} {b}")


def test_a_workers_error_travels_back_as_a_one_line_user_error_or_with_its_traceback():
    unit = Unit("m", "seed-1", "f", "o", (Run("m", "seed", "medqa4", 0),), 0, 1.0)
    user = _portable(ConfigError("eval.fewshot.x=3: too many"), unit)
    back = pickle.loads(pickle.dumps(user))
    assert isinstance(back, ConfigError) and str(back) == "eval.fewshot.x=3: too many" and back.exit_code == 2
    assert not getattr(back, "__notes__", None)
    try:
        raise _Unpicklable("bad", 3)
    except _Unpicklable as e:
        other = _portable(e, unit)
    back = pickle.loads(pickle.dumps(other))
    assert type(back) is RuntimeError and str(back) == "_Unpicklable: bad 3"
    assert not isinstance(back, UserError) and "in the evaluate worker of m/seed-1 seed" in back.__notes__[0]
    assert "raise _Unpicklable" in back.__notes__[0]  # the worker's traceback
