"""The `inputs` roots: every raw input a profile lists lies under the folder DVC tracks for it."""

from __future__ import annotations

import pytest
import yaml

from biomed_llama.config import load_params, validate_params
from biomed_llama.errors import ConfigError
from biomed_llama.inputs import fixed_prefix, is_under


def test_fixed_prefix_stops_at_the_first_wildcard():
    assert fixed_prefix("data/pile/train/*.jsonl.zst") == "data/pile/train"
    assert fixed_prefix("data/pile/val.jsonl.zst") == "data/pile/val.jsonl.zst"
    assert fixed_prefix("data/pile/[0-2]?/x.zst") == "data/pile"
    assert fixed_prefix("*.zst") == "."


@pytest.mark.parametrize("path, root, inside", [
    ("data/pile/train/00.zst", "data/pile", True),
    ("data/pile", "data/pile/", True),
    ("data/pile2/00.zst", "data/pile", False),   # a shared prefix is not a parent folder
    ("data/pile/../raw/x.json", "data/pile", False),
    ("/abs/data/x", "/abs", True),
    ("/anything", "/", True),
])
def test_is_under_compares_folders_not_strings(path, root, inside):
    assert is_under(path, root) is inside


@pytest.mark.parametrize("profile", ["params.yaml", "configs/paper.yaml"])
def test_checked_in_profiles_keep_every_input_under_its_root(repo_root, profile):
    assert load_params(repo_root / profile).inputs  # load_params raises on a misplaced input


@pytest.mark.parametrize("section, key", [
    ({"extract": {"train": ["data/elsewhere/*.zst"]}}, "extract.train"),
    ({"instruct_mix": {"sources": [{"name": "x", "format": "alpaca", "epochs": 1, "paths": ["other/a.json"]}]}},
     "instruct_mix.sources[0] (x)"),
    ({"finetune": {"tasks": {"medqa": {"format": "medqa", "path": "data/sample/instruct/medmcqa/t.jsonl"}}}},
     "finetune.tasks.medqa.path"),
    ({"eval": {"benchmarks": {"medqa4_test": "data/benchmarks/test.jsonl"}}}, "eval.benchmarks.medqa4_test"),
])
def test_an_input_outside_its_root_is_one_config_error(tmp_path, section, key):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(section))
    assert validate_params(section)  # a dict built in code is not a params file DVC reads: not checked
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: {key}: ") and " is not under inputs." in str(err.value)


def test_remote_shard_names_are_not_paths(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"extract": {"remote": "hf://datasets/o/pile", "train": ["train/*.zst"]}}))
    assert load_params(path).extract.train == ["train/*.zst"]
