"""The committed fixtures are exactly what scripts/make_instruct_fixtures.py generates."""

from __future__ import annotations

from biomed_llama.config import load_params
from tests.helpers import load_script


def test_committed_fixtures_match_the_generator(fixtures_dir):
    files = load_script("make_instruct_fixtures").fixtures()
    on_disk = {p.relative_to(fixtures_dir).as_posix() for p in fixtures_dir.rglob("*") if p.is_file()}
    assert on_disk == set(files)
    for rel, text in files.items():
        assert (fixtures_dir / rel).read_text(encoding="utf-8") == text, rel


def test_demo_params_name_existing_fixture_files(repo_root):
    params = load_params(repo_root / "params.yaml")
    paths = [p for s in params.instruct_mix.sources for p in s.paths] + [t.path for t in params.finetune.tasks.values()]
    assert all((repo_root / p).is_file() for p in paths)
    assert {s.format for s in params.instruct_mix.sources} == {"medqa", "medmcqa", "pubmedqa", "alpaca", "examples"}
