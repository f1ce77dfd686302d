"""DVC tracks the real inputs: with the paper profile, replacing one input file makes `dvc status`
name the stage that reads it and `dvc repro` rerun that stage and only the stages downstream.

The paper layout (data/pile, data/raw, data/benchmarks, models/llama-7b) is filled with the demo's
small generated files, in a copy of the checkout; only the cheap data stages run, with sizes and
worker counts turned down through params.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
import zstandard

from biomed_llama.profiles import write_composed
from tests.helpers.dvc import DVC, copy_checkout, run

pytestmark = pytest.mark.integration

DATA_STAGES = ["extract", "tokenize", "instruct-mix", "prepare-eval"]


def _instruct_files(repo: Path) -> dict[str, list[str]]:
    """The demo's fixture file → the paper profile's files for it, matched by source name (the two
    profiles name the same 20 released sources)."""
    demo = {src["name"]: src["paths"] for src in yaml.safe_load((repo / "params.yaml").read_text())["instruct_mix"]["sources"]}
    paper = yaml.safe_load((repo / "configs/paper.yaml").read_text())["instruct_mix"]["sources"]
    out: dict[str, list[str]] = {}
    for src in paper:
        (fixture,) = demo[src["name"]]
        out.setdefault(fixture, []).extend(src["paths"])
    return out


def _paper_layout(repo: Path) -> None:
    """Fill the paper profile's input folders with the demo's files and make it params.yaml (small sizes)."""
    shutil.copytree(repo / "data/sample/pile", repo / "data/pile")
    shutil.copytree(repo / "data/sample/eval", repo / "data/benchmarks")
    shutil.copytree(repo / "data/sample/tokenizer", repo / "models/llama-7b")
    for src, dsts in _instruct_files(repo).items():
        for dst in dsts:
            (repo / dst).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / src, repo / dst)
    # composed as the README switches profile: every key spelled out (DVC refuses a params file lacking one it names)
    write_composed([repo / "configs/paper.yaml"], repo / "params.yaml")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["extract"].update(rows_per_shard=64, workers=1)
    params["tokenize"].update(workers=1, batch_size=64)
    params["instruct_mix"]["n_records"] = 50
    params["launch"]["container"] = "none"  # the profile runs stages in its Apptainer image; none here
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _status(repo: Path) -> str:
    return run([str(DVC), "status", *DATA_STAGES], repo).stdout


def _ran(out: str) -> set[str]:
    return {s for s in DATA_STAGES if f"Running stage '{s}'" in out}


def _replace_shard(path: Path) -> None:
    """Rewrite a Pile shard with its first PubMed record's text changed."""
    lines = zstandard.ZstdDecompressor().decompress(path.read_bytes(), max_output_size=1 << 26).decode().splitlines()
    k = next(i for i, ln in enumerate(lines) if '"PubMed' in ln and ln.startswith("{") and '"text"' in ln)
    rec = json.loads(lines[k])
    rec["text"] = "A replaced abstract about statins. " + rec["text"]
    lines[k] = json.dumps(rec)
    path.write_bytes(zstandard.ZstdCompressor().compress(("\n".join(lines) + "\n").encode()))


@pytest.fixture(scope="module")
def paper(tmp_path_factory) -> Path:
    """A copy of the checkout on the paper profile whose data stages have run once."""
    repo = copy_checkout(tmp_path_factory.mktemp("paper") / "repo")
    _paper_layout(repo)
    first = run([str(DVC), "repro", *DATA_STAGES], repo).stdout
    assert _ran(first) == set(DATA_STAGES), first
    assert "up to date" in _status(repo)
    return repo


def test_a_replaced_pile_shard_reruns_extract_and_what_reads_it(paper: Path):
    _replace_shard(paper / "data/pile/train/01.jsonl.zst")
    status = _status(paper)
    assert "extract:" in status and "modified:" in status and "data/pile" in status, status
    assert "instruct-mix:" not in status and "prepare-eval:" not in status, status
    # The output's manifest still records the old shard: verify --inputs names it.
    stale = run([sys.executable, "-m", "biomed_llama", "verify", "data/extracted", "--inputs"], paper, ok=False)
    assert stale.returncode == 3, stale.stdout + stale.stderr
    assert stale.stderr.startswith("error: data/extracted is stale: input data/pile/train/01.jsonl.zst: sha256 differs")
    out = run([str(DVC), "repro", *DATA_STAGES], paper).stdout
    assert _ran(out) == {"extract", "tokenize", "prepare-eval"}, out
    assert "up to date" in _status(paper)
    ok = run([sys.executable, "-m", "biomed_llama", "verify", "data/extracted", "--inputs"], paper)
    assert "recorded inputs are unchanged" in ok.stdout


def test_a_replaced_instruction_file_reruns_instruct_mix_only(paper: Path):
    path = paper / "data/raw/alpaca/alpaca_data_cleaned.json"
    records = json.loads(path.read_text())
    path.write_text(json.dumps(records[1:], indent=1))
    status = _status(paper)
    assert "instruct-mix:" in status and "data/raw" in status, status
    assert "extract:" not in status and "prepare-eval:" not in status, status
    out = run([str(DVC), "repro", *DATA_STAGES], paper).stdout
    assert _ran(out) == {"instruct-mix"}, out


def test_a_replaced_benchmark_file_reruns_prepare_eval_only(paper: Path):
    path = paper / "data/benchmarks/pubmedqa/ori_pqal.json"
    items = json.loads(path.read_text())
    path.write_text(json.dumps(dict(list(items.items())[1:])))
    status = _status(paper)
    assert "prepare-eval:" in status and "data/benchmarks" in status, status
    assert "extract:" not in status and "instruct-mix:" not in status, status
    out = run([str(DVC), "repro", *DATA_STAGES], paper).stdout
    assert _ran(out) == {"prepare-eval"}, out
