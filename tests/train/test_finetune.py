"""Fine-tuning through the pretrain engine on CPU: the loss counts output + EOS tokens only, a short
run learns (instruct and task mode), a killed run resumes exactly, other examples train fresh in a
run folder of their own, and the pretrain stage exports its starting weights (`pretrain.export_init`)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import train as H
from tests.helpers.train import curve as _curve, wait_for_line as _wait_for_line, weights as _weights

SAMPLE = H.REPO / "data" / "sample" / "instruct"
STEPS = 10  # medqa fixture: 40 records, global batch 4, 1 epoch


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A tiny pretrain run (2 steps) that also exports its random init; returns its folder."""
    from biomed_llama.train.pretrain import PretrainParams, run_pretrain

    tmp = tmp_path_factory.mktemp("pre")
    tokens = H.make_tokens(tmp / "tokens")
    raw = H.tiny_params(tmp, tokens, max_steps=2, export_init=str(tmp / "init"))
    raw["model"]["max_position_embeddings"] = 256  # room for whole fine-tune examples
    run_pretrain(PretrainParams.of(H.validate(raw)))
    return tmp


def ft_params(tmp: Path, start: Path, **finetune) -> dict:
    """Raw params: the tiny engine settings of the pretrain tests, fine-tuning `start` with outputs under `tmp`."""
    raw = H.tiny_params(tmp, tmp / "unused-tokens", log_every=1)
    mix = yaml.safe_load((H.REPO / "params.yaml").read_text())["instruct_mix"]
    for src in mix["sources"]:
        src["paths"] = [str(H.REPO / p) for p in src["paths"]]
    raw["instruct_mix"] = {**mix, "n_records": 40, "output": str(tmp / "instruct"),
                           "metrics": str(tmp / "mix.json")}
    hp = {"optim": {"lr": 3e-3, "weight_decay": 0.0, "warmup_ratio": 0.1}, "epochs": 1, "global_batch_size": 4,
          "micro_batch_size": 2}
    raw["finetune"] = {
        "model": str(start), "instruct_output": str(tmp / "instruct-model"), "task_output_prefix": str(tmp / "ft-"),
        "checkpoints": str(tmp / "ckpt"), "metrics_prefix": str(tmp / "metrics-"), "plots": str(tmp / "plots"),
        "checkpoint_every": 5, "max_length": 144, "truncation": "prompt_left", "mixture": str(tmp / "instruct"),
        "instruct": hp, "task": hp,
        "tasks": {"medqa": {"format": "medqa", "path": str(SAMPLE / "medqa" / "train_4opt.jsonl")}},
        "base": None,  # no second start (the demo's default trains models/base too)
        **finetune,
    }
    return raw


def _finetune(raw: dict, mode: str = "task", task: str | None = "medqa"):
    from biomed_llama.train.finetune import FinetuneParams, run_finetune

    return run_finetune(FinetuneParams.of(H.validate(raw)), mode, task)


@pytest.fixture(scope="module")
def straight(pretrained, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ft-straight")
    raw = ft_params(tmp, pretrained / "model")
    return _finetune(raw), tmp, raw


def test_export_init_is_the_seeded_init(pretrained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from biomed_llama.model.build import init_weights
    from biomed_llama.provenance import verify

    params = H.validate(H.tiny_params(pretrained, pretrained / "tokens"))  # the seed of the run
    init = AutoModelForCausalLM.from_pretrained(pretrained / "init")
    ref = AutoModelForCausalLM.from_config(init.config)
    init_weights(ref, params.seed, init.config.initializer_range)
    assert all(torch.equal(a, b) for a, b in zip(init.state_dict().values(), ref.state_dict().values()))
    assert verify(pretrained / "init") == []
    assert json.loads((pretrained / "init" / "manifest.json").read_text())["stage"] == "init"
    assert len(AutoTokenizer.from_pretrained(pretrained / "init")) == init.config.vocab_size
    # the trained model moved away from it
    trained = _weights(pretrained / "model")
    assert any(not torch.equal(trained[k], v) for k, v in _weights(pretrained / "init").items())


def test_rerun_after_resume_exports_the_same_init(pretrained):
    """A rerun that resumes (here: of the finished run) re-creates the init export before loading the checkpoint."""
    import shutil

    from biomed_llama.train.pretrain import PretrainParams, run_pretrain

    before_init, before_model = _weights(pretrained / "init"), _weights(pretrained / "model")
    shutil.rmtree(pretrained / "init")
    raw = H.tiny_params(pretrained, pretrained / "tokens", max_steps=2, export_init=str(pretrained / "init"))
    raw["model"]["max_position_embeddings"] = 256
    again = run_pretrain(PretrainParams.of(H.validate(raw)))
    assert sorted(again.losses) == [1, 2]  # from the checkpoint's history: nothing retrained
    for before, folder in ((before_init, "init"), (before_model, "model")):
        after = _weights(pretrained / folder)
        assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before), folder


def test_first_loss_is_the_masked_mean_over_output_tokens(straight):
    """Step 1's loss equals a direct CE of the start model over the first global batch, counting only
    output + EOS positions (prompt, BOS and padding excluded)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from biomed_llama.data.loader import DistributedLoader
    from biomed_llama.instruct.finetune_data import IGNORE_INDEX, build_sft_dataset

    result, tmp, raw = straight
    params = H.validate(raw)
    start = params.finetune.model
    ds = build_sft_dataset(params.finetune, "task", "medqa", AutoTokenizer.from_pretrained(start), params.readers, params.instruct_mix.on_bad_record)
    loader = DistributedLoader(ds, global_batch=4, micro_batch=4, dp_rank=0, dp_size=1, seed=params.seed, shuffle=True)
    (mb,) = loader.next_batch()
    model = AutoModelForCausalLM.from_pretrained(start)
    with torch.no_grad():
        logits = model(input_ids=mb.input_ids).logits[:, :-1]
    targets = mb.labels[:, 1:]
    counted = targets != IGNORE_INDEX
    assert 0 < counted.sum() < (mb.input_ids != ds.pad_id).sum() - 4  # prompts are masked
    assert (mb.input_ids == ds.pad_id).any()  # and some rows are padded
    direct = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                               ignore_index=IGNORE_INDEX).item()
    assert abs(result.losses[1] - direct) < 1e-5, (result.losses[1], direct)


def test_task_finetune_learns_and_exports(straight):
    from transformers import AutoModelForCausalLM

    from biomed_llama.provenance import verify

    result, tmp, raw = straight
    losses = [result.losses[s] for s in sorted(result.losses)]
    assert len(losses) == STEPS
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    out = tmp / "ft-medqa"
    assert AutoModelForCausalLM.from_pretrained(out).config.vocab_size > 0 and verify(out) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "finetune" and manifest["params"]["task"] == "medqa"
    assert set(manifest["inputs"]) == {raw["finetune"]["model"], str(SAMPLE / "medqa" / "train_4opt.jsonl")}
    metrics = json.loads((tmp / "metrics-medqa.json").read_text())
    assert metrics["steps"] == STEPS and metrics["data_examples"] == 40 and metrics["final_loss"] == losses[-1]
    assert _curve(tmp / "plots" / "medqa") == losses


def test_instruct_finetune_learns(pretrained, tmp_path):
    from biomed_llama.instruct.mixture import run_instruct_mix

    raw = ft_params(tmp_path, pretrained / "model")
    params = H.validate(raw)
    run_instruct_mix(params.instruct_mix, params.readers)
    result = _finetune(raw, "instruct", None)
    losses = [result.losses[s] for s in sorted(result.losses)]
    assert len(losses) == STEPS and losses[-1] < losses[0] - 0.3, losses
    assert (tmp_path / "instruct-model" / "model.safetensors").is_file()
    assert (tmp_path / "plots" / "instruct" / "loss.tsv").is_file() and (tmp_path / "metrics-instruct.json").is_file()


def test_kill_and_resume_is_exact(straight, tmp_path):
    full, full_dir, full_raw = straight
    raw = ft_params(tmp_path, Path(full_raw["finetune"]["model"]))
    params_file = H.write_params_file(tmp_path / "params.yaml", raw)
    cmd = [sys.executable, "-m", "biomed_llama", "finetune", "--mode", "task", "--task", "medqa",
           "--params", str(params_file)]
    proc = subprocess.Popen(cmd, env=H.env_for_subprocess(), cwd=H.REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_line(proc, f"step 6/{STEPS}")  # the step-5 checkpoint is complete
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert [s for s, _ in H.run_checkpoints(tmp_path / "ckpt" / "task-medqa")][-1] == 5
    resumed = _finetune(raw)
    assert resumed.losses == full.losses  # history from the checkpoint + the resumed steps, bit for bit
    assert _curve(tmp_path / "plots" / "medqa") == [full.losses[s] for s in range(1, STEPS + 1)]
    a, b = _weights(full_dir / "ft-medqa"), _weights(tmp_path / "ft-medqa")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_other_examples_train_fresh_beside_the_first_run(straight, tmp_path):
    """The task file changed (same params): the persisted checkpoints of the first run are neither
    resumed nor refused; the new run starts at step 1 in its own folder and leaves them untouched."""
    import shutil

    full, full_dir, full_raw = straight
    # same count of records, one answer text changed: only the dataset fingerprint differs
    rows = [json.loads(line) for line in (SAMPLE / "medqa" / "train_4opt.jsonl").read_text().splitlines() if line]
    first = rows[0]
    key = first["answer_idx"]
    first["options"][key] = first["options"][key] + " indeed"
    first["answer"] = first["options"][key]
    changed = tmp_path / "train.jsonl"
    changed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = json.loads(json.dumps(full_raw))
    raw["finetune"]["tasks"]["medqa"]["path"] = str(changed)
    for key in ("checkpoints", "plots", "task_output_prefix", "metrics_prefix"):  # only the checkpoints are shared
        raw["finetune"][key] = raw["finetune"][key].replace(str(full_dir), str(tmp_path))
    shutil.copytree(full_dir / "ckpt", tmp_path / "ckpt")
    (first,) = H.run_dirs(tmp_path / "ckpt" / "task-medqa")
    before = H.tree_digest(first)
    other = _finetune(raw)
    assert sorted(other.losses) == list(range(1, STEPS + 1))  # trained from step 1, not resumed
    assert other.losses != full.losses
    assert _curve(tmp_path / "plots" / "medqa") == [other.losses[s] for s in range(1, STEPS + 1)]
    assert len(H.run_dirs(tmp_path / "ckpt" / "task-medqa")) == 2 and H.tree_digest(first) == before


def test_seeds_give_one_model_each_and_the_base_start_its_own_folders(pretrained, tmp_path):
    """A seed list trains one model per seed (other data orders, so other weights) in one process; `--base`
    fine-tunes `finetune.base` into its own output, checkpoint, metrics and plot paths."""
    from biomed_llama.train.finetune import FinetuneParams, run_task_seeds

    raw = ft_params(tmp_path, pretrained / "model", task={"optim": {"lr": 3e-3}, "epochs": 0.2, "global_batch_size": 4,
                                                             "micro_batch_size": 4},
                    base={"model": str(pretrained / "init"), "instruct_output": str(tmp_path / "b-instruct"),
                          "task_output_prefix": str(tmp_path / "b-ft-")})
    raw["finetune"]["tasks"]["medqa"]["seeds"] = [7, 8]
    params = H.validate(raw)
    results = run_task_seeds(FinetuneParams.of(params), "medqa", "base")
    assert sorted(results) == [7, 8] and all(len(r.losses) == 2 for r in results.values())
    assert results[7].losses != results[8].losses  # the seed decides the data order
    a, b = _weights(tmp_path / "b-ft-medqa" / "seed-7"), _weights(tmp_path / "b-ft-medqa" / "seed-8")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    metrics = json.loads((tmp_path / "metrics-base-medqa.json").read_text())
    assert metrics["seeds"] == [7, 8] and metrics["seed-8"]["final_loss"] == results[8].losses[max(results[8].losses)]
    details = json.loads((tmp_path / "metrics-base-medqa.details.json").read_text())  # beside the headline
    assert details["seed-8"]["seed"] == 8 and details["seed-7"]["start"] == "base" and "seed" not in metrics["seed-7"]
    manifest = json.loads((tmp_path / "b-ft-medqa" / "seed-7" / "manifest.json").read_text())
    assert manifest["params"]["profile"] == params.profile and manifest["params"]["start"] == "base"
    assert _curve(tmp_path / "plots" / "base-medqa" / "seed-8") == [results[8].losses[s] for s in (1, 2)]
    assert len(H.run_dirs(tmp_path / "ckpt" / "base-task-medqa")) == 2
    assert not (tmp_path / "ft-medqa").exists()  # the pretrained start's folders are untouched


def test_bad_mode_or_task_is_one_line_error(straight):
    from biomed_llama.errors import UserError

    _, _, raw = straight
    with pytest.raises(UserError, match="needs --task"):
        _finetune(raw, "task", None)
    with pytest.raises(UserError, match="unknown fine-tune task 'nope'"):
        _finetune(raw, "task", "nope")
    from biomed_llama.train.finetune import FinetuneParams, run_finetune

    with pytest.raises(UserError, match="needs finetune.base"):
        run_finetune(FinetuneParams.of(H.validate(raw)), "instruct", None, "base")


def test_launch_passes_stage_args_through():
    from biomed_llama.launch.commands import build
    from biomed_llama.launch.config import LaunchConfig

    extra = ["--mode", "task", "--task", "medqa"]
    local = build(LaunchConfig(), "finetune", "params.yaml", ["seed=1"], extra)
    assert local.argv[-9:] == ["finetune", "--params", "params.yaml", "--set", "seed=1", *extra]
    slurm = build(LaunchConfig(mode="slurm"), "finetune", "params.yaml", [], extra)
    assert slurm.argv[-5:] == ["scripts/slurm/finetune.sbatch", *extra]
    # torchrun's own parser must leave the stage's options alone (it takes abbreviations of its options:
    # a `--start` would have been read as its `--start-method`)
    from torch.distributed.run import get_args_parser

    for stage_extra in (["--mode", "instruct", "--base"], [*extra, "--base"]):
        argv = build(LaunchConfig(nproc_per_node=2), "finetune", "params.yaml", [], stage_extra).argv
        parsed = get_args_parser().parse_args(argv[argv.index("torch.distributed.run") + 1:])
        assert parsed.training_script == "biomed_llama" and parsed.training_script_args[-len(stage_extra):] == stage_extra


def test_released_pad_token_trains_one_mean_row_more_and_exports_the_base_vocabulary(pretrained, straight, tmp_path):
    """`finetune.pad_token: released` (evaluation/main.py:98-103): step 1's loss is the released model's, i.e. the
    start model resized by one row whose embedding and LM-head rows are the mean of the others (the original's
    modeling_utils.py:24-35); the export drops the row again; the run id differs from the plain run's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from biomed_llama.data.loader import DistributedLoader
    from biomed_llama.instruct.finetune_data import IGNORE_INDEX, build_sft_dataset

    plain, plain_tmp, _ = straight
    raw = ft_params(tmp_path, pretrained / "model", pad_token="released")
    raw["finetune"]["task"]["micro_batch_size"] = 4
    result = _finetune(raw)
    params = H.validate(raw)
    start = params.finetune.model
    ds = build_sft_dataset(params.finetune, "task", "medqa", AutoTokenizer.from_pretrained(start), params.readers,
                           params.instruct_mix.on_bad_record)
    loader = DistributedLoader(ds, global_batch=4, micro_batch=4, dp_rank=0, dp_size=1, seed=params.seed, shuffle=True)
    (mb,) = loader.next_batch()
    model = AutoModelForCausalLM.from_pretrained(start)
    vocab = model.config.vocab_size
    # what smart_tokenizer_and_embedding_resize did: resize by one, then the new rows = the mean of the old ones
    model.resize_token_embeddings(vocab + 1, mean_resizing=False)
    with torch.no_grad():
        for emb in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            emb[-1:] = emb[:-1].mean(dim=0, keepdim=True)
        logits = model(input_ids=mb.input_ids).logits[:, :-1]
    targets = mb.labels[:, 1:]
    released = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab + 1), targets.reshape(-1),
                                                 ignore_index=IGNORE_INDEX).item()
    assert abs(result.losses[1] - released) < 1e-5, (result.losses[1], released)
    assert abs(result.losses[1] - plain.losses[1]) > 1e-6  # the extra logit changes the numbers
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "ft-medqa")
    assert exported.config.vocab_size == vocab
    assert exported.get_input_embeddings().weight.shape == exported.get_output_embeddings().weight.shape[:1] + (
        exported.config.hidden_size,) == (vocab, exported.config.hidden_size)
    assert len(AutoTokenizer.from_pretrained(tmp_path / "ft-medqa")) == len(AutoTokenizer.from_pretrained(start))
    assert H.run_dirs(tmp_path / "ckpt" / "task-medqa")[0].name != H.run_dirs(plain_tmp / "ckpt" / "task-medqa")[0].name
