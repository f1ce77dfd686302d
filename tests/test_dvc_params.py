"""dvc.yaml's `params:` lists: every key that changes a stage's numbers, no speed-only key (DESIGN contract 11).

Which keys are speed-only is said once, by each section's `SPEED_ONLY` (biomed_llama/schema.py); the run
id leaves the same pretrain keys out (train/runs.py).
"""

from __future__ import annotations

import pytest
import yaml

from biomed_llama.config import Params, load_params
from biomed_llama.contamination.config import ContaminationConfig
from biomed_llama.data.config import ExtractConfig, TokenizeConfig
from biomed_llama.profiles import write_composed
from biomed_llama.schema import StrictModel, _section_type
from biomed_llama.train import runs
from biomed_llama.train.config import FinetuneConfig, PretrainConfig
from tests.helpers import REPO

SPEED = Params.speed_only_keys()


def leaves(cls: type[StrictModel], prefix: str) -> set[str]:
    """Dotted keys of every field of a section that is no section itself (a dict of entries is one key)."""
    out = set()
    for name, f in cls.model_fields.items():
        sub = _section_type(f.annotation)
        out |= leaves(sub, f"{prefix}{name}.") if sub else {prefix + name}
    return out


ALL = leaves(Params, "")


def stage_params() -> dict[str, list[str]]:
    """Stage name → its `params:` keys as dvc.yaml lists them."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: [p for p in body.get("do", body).get("params", []) if isinstance(p, str)]
            for name, body in stages.items()}


def covered(keys: list[str]) -> set[str]:
    """The leaf keys that a params list tracks (a section tracks every key under it)."""
    return {leaf for leaf in ALL for k in keys if leaf == k or leaf.startswith(k + ".")}


def test_the_speed_only_keys_are_the_ones_the_run_id_leaves_out():
    assert {"pretrain.micro_batch_size", "pretrain.log_every", "pretrain.compile", "pretrain.kernels",
            "pretrain.checkpoint_every", "pretrain.gathered_layers", "pretrain.activation_memory_budget",
            "eval.batch_size", "finetune.task.micro_batch_size", "extract.workers"} <= SPEED
    assert PretrainConfig.SPEED_ONLY <= runs._RESUME_FREE
    # the run ids of earlier versions (their checkpoints resume): the resume-free set is what it was, plus fields
    # added later that earlier versions did not have (`deterministic`), which leave those ids as they were
    assert runs._RESUME_FREE == {"deterministic",
        "micro_batch_size", "device", "shard_size", "reshard_after_forward", "compile", "activation_checkpointing",
        "log_every", "checkpoint_every", "keep_checkpoints", "checkpoint_dir", "output", "export_dtype",
        "export_init", "metrics", "plots", "progress", "sdpa_backend", "kernels", "grad_sync", "checkpoint_async",
        "activation_memory_budget", "gathered_layers"}
    assert SPEED <= ALL  # each names a field


@pytest.mark.parametrize("stage", list(stage_params()))
def test_no_stage_tracks_a_speed_only_key(stage):
    assert covered(stage_params()[stage]) & SPEED == set()


@pytest.mark.parametrize("stage, section", [("extract", ExtractConfig), ("tokenize", TokenizeConfig),
                                            ("pretrain", PretrainConfig), ("finetune-instruct", FinetuneConfig),
                                            ("finetune-task", FinetuneConfig),
                                            ("contamination", ContaminationConfig)])
def test_each_stage_tracks_every_other_key_of_its_section(stage, section):
    name = {ExtractConfig: "extract", TokenizeConfig: "tokenize", PretrainConfig: "pretrain",
            FinetuneConfig: "finetune", ContaminationConfig: "contamination"}[section]
    assert covered(stage_params()[stage]) >= leaves(section, name + ".") - SPEED


@pytest.mark.parametrize("stage", ["finetune-instruct", "finetune-task", "finetune-instruct-base", "finetune-task-base"])
def test_fine_tuning_tracks_only_the_pretrain_keys_it_inherits(stage):
    tracked = {k for k in covered(stage_params()[stage]) if k.startswith("pretrain.")}
    assert tracked == {f"pretrain.{k}" for k in FinetuneConfig.INHERITED - PretrainConfig.SPEED_ONLY}


def test_a_fine_tune_takes_only_the_inherited_pretrain_keys():
    p = load_params(REPO / "params.yaml")
    other = p.pretrain.model_copy(update={"tokens": "elsewhere", "packing": "truncate", "max_seq_length": 64,
                                          "param_dtype": "bfloat16", "log_every": 3})
    cfg = p.finetune.engine_config(other, "instruct", None, 100)
    assert (cfg.tokens, cfg.packing, cfg.max_seq_length) == ("data/tokens", "concat", p.finetune.max_length)
    assert (cfg.param_dtype, cfg.log_every) == ("bfloat16", 3)
    assert FinetuneConfig.INHERITED <= set(PretrainConfig.model_fields)


def test_every_tracked_key_is_in_params_yaml_and_in_a_composed_profile(tmp_path):
    # DVC refuses to run a stage whose params file lacks a key it names
    listed = {k for keys in stage_params().values() for k in keys}

    def has(data: dict, key: str) -> bool:
        for part in key.split("."):
            if not isinstance(data, dict) or part not in data:
                return False
            data = data[part]
        return True

    demo = yaml.safe_load((REPO / "params.yaml").read_text())
    assert {k for k in listed if not has(demo, k)} == set()
    for layers in (["configs/paper.yaml"], ["configs/paper.yaml", "configs/overlays/intent.yaml"]):
        out = tmp_path / "params.yaml"
        write_composed([REPO / p for p in layers], out)
        composed = yaml.safe_load(out.read_text())
        assert {k for k in listed if not has(composed, k)} == set(), layers
