"""DVC reruns only what an edit can change (DESIGN contract 11), checked with `dvc status` on the real dvc.yaml.

A scratch git + DVC copy of the checkout gets a placeholder for every stage output and `dvc commit`
records the whole pipeline as up to date (what a finished run leaves, without spending minutes on
one). Then one file that only later stages use is edited, or one param changed, and `dvc status`
must name exactly the stages whose code or numbers it can change: at every stage boundary, the
earlier stages stay up to date.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers.dvc import DVC, copy_checkout, run

pytestmark = pytest.mark.integration

DATA = {"extract", "tokenize"}
FINETUNE = {f"{stage}@{task}" for stage in ("finetune-task", "finetune-task-base")
            for task in ("medqa", "medmcqa", "pubmedqa")} | {"finetune-instruct", "finetune-instruct-base"}
EVAL = {"prepare-eval", "evaluate"}
CONTAMINATION = {"contamination"}
ALL = DATA | {"pretrain", "instruct-mix"} | FINETUNE | EVAL | CONTAMINATION


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout whose dvc.lock records every stage as done (placeholder outputs)."""
    from dvc.repo import Repo

    repo = copy_checkout(tmp_path_factory.mktemp("invalidation") / "repo")
    with Repo(str(repo)) as dvc:
        stages = {s.name for s in dvc.index.stages}
        for stage in dvc.index.stages:
            for out in stage.outs:
                path = Path(out.fs_path)
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("placeholder\n")
    assert stages == ALL, "the pipeline's stages changed: update this test's groups"
    run([str(DVC), "commit", "--force", "--quiet"], repo)
    assert changed(repo) == set()
    return repo


def changed(repo: Path) -> set[str]:
    """The stages `dvc status` says must rerun."""
    return set(json.loads(run([str(DVC), "status", "--json"], repo).stdout or "{}"))


def edited(repo: Path, rel: str) -> set[str]:
    """The stages that must rerun after a (harmless) edit of `rel`; the file is restored afterwards."""
    path = repo / rel
    before = path.read_text()
    path.write_text(before + "\n# edited\n")
    try:
        return changed(repo)
    finally:
        path.write_text(before)


def with_params(repo: Path, **values) -> set[str]:
    """The stages that must rerun after setting dotted params keys (`pretrain__log_every=1`); params.yaml is restored."""
    path = repo / "params.yaml"
    before = path.read_text()
    data = yaml.safe_load(before)
    for dotted, value in values.items():
        *parents, leaf = dotted.split("__")
        node = data
        for part in parents:
            node = node[part]
        assert leaf in node, dotted
        node[leaf] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        return changed(repo)
    finally:
        path.write_text(before)


@pytest.mark.parametrize("rel, expected", [
    # the benchmark readers: instruct-mix, task fine-tuning and evaluation read them; data and pretraining do not
    ("biomed_llama/benchmarks/readers.py", {"instruct-mix"} | FINETUNE | EVAL | CONTAMINATION),
    # a benchmark test file: the two stages that read it, no training (`dvc status` names the stages whose own
    # deps changed; evaluate, which reads both outputs, follows them in `dvc repro`)
    ("data/sample/eval/medqa/US/test.jsonl", {"prepare-eval"} | CONTAMINATION),
    ("data/sample/eval/pubmedqa/ori_pqal.json", {"prepare-eval"} | CONTAMINATION),
    ("biomed_llama/contamination/scan.py", CONTAMINATION),
    ("biomed_llama/contamination/results.py", {"evaluate"}),
    ("biomed_llama/eval/harness.py", {"evaluate"}),  # prepare-eval plans with eval/plan.py, runs nothing
    ("biomed_llama/eval/plan.py", EVAL),
    ("biomed_llama/instruct/mixture.py", {"instruct-mix"} | FINETUNE),  # fine-tuning reads the mixture file
    ("biomed_llama/train/finetune.py", FINETUNE),
    ("biomed_llama/train/engine.py", {"pretrain"} | FINETUNE),
    ("biomed_llama/data/tokenize.py", {"tokenize"}),
    ("biomed_llama/eval/table.py", {"evaluate"}),
])
def test_an_edit_reruns_only_the_stages_that_use_the_file(recorded, rel, expected):
    assert edited(recorded, rel) == expected


def test_speed_only_keys_rerun_nothing(recorded):
    assert with_params(recorded, pretrain__log_every=1) == set()
    assert with_params(recorded, pretrain__micro_batch_size=4, pretrain__compile=True, pretrain__progress=False,
                       finetune__checkpoint_every=7, extract__workers=1, eval__batch_size=2) == set()


def test_a_numbers_key_reruns_its_stage_and_fine_tuning_only_what_it_inherits(recorded):
    assert with_params(recorded, pretrain__optim__lr=1e-3) == {"pretrain"}  # fine-tuning has its own optimiser
    assert with_params(recorded, pretrain__param_dtype="bfloat16") == {"pretrain"} | FINETUNE  # inherited
    assert with_params(recorded, seed=7) == {"pretrain"} | FINETUNE  # extraction draws nothing at random


def test_contamination_params_rerun_it_alone(recorded):
    assert with_params(recorded, contamination__ngram=8) == CONTAMINATION
    assert with_params(recorded, contamination__workers=1) == set()  # speed only
    assert with_params(recorded, eval__contamination=None) == {"evaluate"}
