"""Params: every checked-in YAML parses, overrides apply, and mistakes are one-line ConfigErrors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from biomed_llama.config import Params, apply_overrides, load_params, parse_override, validate_params
from biomed_llama.errors import ConfigError
from tests.helpers import REPO

PROFILES = [REPO / "params.yaml", *sorted((REPO / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_every_checked_in_yaml_parses(path: Path) -> None:
    params = load_params(path)
    assert isinstance(params, Params)
    # Every top-level key of the file is a section the model knows (no silently ignored keys).
    raw = yaml.safe_load(path.read_text())
    assert set(raw) <= set(Params.model_fields)


def test_paper_profile_is_the_paper() -> None:
    params = load_params(REPO / "configs" / "paper.yaml")
    assert params.profile == "paper"
    assert params.extract.subsets == ["PubMed Abstracts", "PubMed Central"]


def test_every_field_has_a_docstring() -> None:
    def walk(model: type, prefix: str) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if not field.description:
                missing.append(prefix + name)
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                missing += walk(ann, f"{prefix}{name}.")
        return missing

    assert walk(Params, "") == []


def test_override_parses_yaml_values() -> None:
    assert parse_override("pretrain.optim.lr=3e-5") == (["pretrain", "optim", "lr"], 3e-5)
    assert parse_override("extract.subsets=[A, B]") == (["extract", "subsets"], ["A", "B"])
    data = apply_overrides({"extract": {"workers": 1}}, ["extract.workers=3", "seed=7"])
    assert data == {"extract": {"workers": 3}, "seed": 7}


def test_override_reaches_the_model(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("extract:\n  workers: 1\n")
    assert load_params(p, ["extract.workers=4"]).extract.workers == 4


def test_override_reaches_the_optimiser_sections() -> None:
    params = load_params(REPO / "params.yaml", ["pretrain.optim.lr=1e-4", "finetune.task.optim.betas=[0.9, 0.99]",
                                               "finetune.instruct.optim.num_cycles=0.25"])
    assert params.pretrain.optim.lr == 1e-4 and params.finetune.task.optim.betas == (0.9, 0.99)
    assert params.finetune.instruct.optim.num_cycles == 0.25
    assert params.finetune.instruct.optim.lr == 1e-3  # the rest as params.yaml says


def test_validating_params_imports_no_io_library() -> None:
    """Validators are pure: loading the params of every profile imports none of the readers' or trainers'
    heavy libraries (the CLI loads params before a stage imports what it needs)."""
    import subprocess
    import sys

    heavy = ["zstandard", "torch", "transformers", "pyarrow", "datasets"]
    code = ("import sys, biomed_llama.config as c\n"
            f"for f in {[str(p) for p in PROFILES]!r}: c.load_params(f)\n"
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"extract": {"wrokers": 2}}, "extract.wrokers: unknown key"),
        ({"extract": {"workers": "many"}}, "extract.workers: Input should be a valid integer"),
        ({"extract": {"workers": 0}}, "extract.workers: Input should be greater than or equal to 1"),
        ({"extract": {"on_bad_record": "ignore"}}, "extract.on_bad_record"),
        ({"tokenize": {"input": "x", "output": "x"}}, "tokenize"),
        ({"nonsense": 1}, "nonsense: unknown key"),
        ({"pretrain": {"lr": 1e-3}}, "pretrain.lr: unknown key"),  # the optimiser's keys live in pretrain.optim
        ({"pretrain": {"optim": {"betas": [0.9, 1.0]}}}, "pretrain.optim: Value error, betas must lie in [0, 1)"),
        ({"finetune": {"task": {"optim": {"lrr": 1}}}}, "finetune.task.optim.lrr: unknown key"),
    ],
)
def test_bad_values_are_one_line_errors(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        validate_params(data, "params.yaml")
    msg = str(e.value)
    assert needle in msg
    assert "\n" not in msg
    assert e.value.exit_code == 2


def test_malformed_override_and_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("no-equals-sign")
    bad = tmp_path / "bad.yaml"
    bad.write_text("extract: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")
