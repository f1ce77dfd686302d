"""Pretraining engine on CPU (gloo): equivalence to a plain HF loop for 1, 2 and 2×2 processes,
micro×accumulation invariance, exact resume after a kill, SIGTERM checkpoint, export, and run
folders: other params or other token content train fresh beside the first run's checkpoints."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import train as H
from tests.helpers.train import curve as _curve, wait_for_line as _wait_for_line, weights as _weights

TOL = 1e-5


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return H.make_tokens(tmp_path_factory.mktemp("tokens"))


def reference_losses(params) -> tuple[list[float], torch.nn.Module]:
    """A plain single-process HF loop: LlamaForCausalLM, torch AdamW, transformers' cosine schedule."""
    from transformers import AutoTokenizer, LlamaForCausalLM, get_cosine_schedule_with_warmup

    from biomed_llama.data.loader import DistributedLoader, PackedDataset, open_stores
    from biomed_llama.model.build import init_weights, llama_config

    cfg, hp = params.pretrain, params.pretrain.optim
    config = llama_config(params.model, len(AutoTokenizer.from_pretrained(cfg.tokenizer)))
    model = LlamaForCausalLM(config)
    init_weights(model, params.seed, config.initializer_range)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr, betas=hp.betas, eps=hp.eps)
    steps = cfg.max_steps
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(steps * hp.warmup_ratio), steps, hp.num_cycles)
    data = PackedDataset(open_stores(cfg.tokens, cfg.subsets, cfg.split), cfg.max_seq_length, cfg.packing)
    # the whole global batch in one forward: dp 1, micro = global
    loader = DistributedLoader(data, global_batch=cfg.global_batch_size, micro_batch=cfg.global_batch_size,
                               dp_rank=0, dp_size=1, seed=params.seed, shuffle=cfg.shuffle)
    losses = []
    for _ in range(steps):
        (mb,) = loader.next_batch()
        out = model(input_ids=mb.input_ids, labels=mb.labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    return losses, model


@pytest.fixture(scope="module")
def reference(tokens, tmp_path_factory):
    params = H.validate(H.tiny_params(tmp_path_factory.mktemp("ref"), tokens))
    return reference_losses(params)


def _run(tmp: Path, tokens: Path, **kw):
    from biomed_llama.train.pretrain import PretrainParams, run_pretrain

    return run_pretrain(PretrainParams.of(H.validate(H.tiny_params(tmp, tokens, **kw))))


def test_one_process_matches_hf_reference(tokens, reference, tmp_path):
    ref, ref_model = reference
    result = _run(tmp_path, tokens)
    got = [result.losses[s] for s in sorted(result.losses)]
    assert len(got) == len(ref) == 6
    assert max(abs(a - b) for a, b in zip(got, ref)) < TOL, (got, ref)
    assert got[-1] < got[0]  # it learns
    assert _curve(tmp_path / "plots") == got
    # the export loads with stock transformers and gives the reference model's logits
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    x = torch.randint(3, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (exported(x).logits - ref_model(x).logits).abs().max().item()
    assert diff < 1e-4
    assert (tmp_path / "model" / "manifest.json").is_file()
    assert (tmp_path / "model" / "tokenizer.json").is_file()
    metrics = result.metrics
    assert metrics["tokens_seen"] == 6 * 4 * 32 and metrics["final_loss"] == got[-1] and metrics["mfu"] is None


def test_micro_times_accumulation_invariance(tokens, tmp_path):
    a = _run(tmp_path / "a", tokens, micro_batch_size=2)  # accumulation 2
    b = _run(tmp_path / "b", tokens, micro_batch_size=4)  # accumulation 1
    c = _run(tmp_path / "c", tokens, micro_batch_size=1)  # accumulation 4
    for other in (b, c):
        assert max(abs(a.losses[s] - other.losses[s]) for s in a.losses) < TOL


@pytest.mark.integration
@pytest.mark.parametrize("nproc,shard", [(2, 2), (4, 2)], ids=["fsdp-2", "hybrid-2x2"])
def test_multi_process_matches_reference(tokens, reference, tmp_path, nproc, shard):
    ref, ref_model = reference
    raw = H.tiny_params(tmp_path, tokens, micro_batch_size=1, shard_size=shard)
    if nproc == 2:
        # start from a HF directory holding the same initial weights: each rank loads only its shards
        from transformers import AutoTokenizer, LlamaForCausalLM

        from biomed_llama.model.build import init_weights, llama_config

        params = H.validate(raw)
        config = llama_config(params.model, len(AutoTokenizer.from_pretrained(H.TOKENIZER)))
        base = LlamaForCausalLM(config)
        init_weights(base, params.seed, config.initializer_range)
        base.save_pretrained(tmp_path / "base", safe_serialization=True, max_shard_size="200KB")
        raw["model"]["base"] = str(tmp_path / "base")
        raw["model"]["base_external"] = True  # made here, not by a stage: no manifest
    proc = H.torchrun(nproc, H.write_params_file(tmp_path / "params.yaml", raw))
    assert proc.returncode == 0, proc.stderr[-3000:]
    mesh = "2×2" if nproc == 4 else "1×2"
    assert f"mesh (replicate×shard) {mesh}" in proc.stdout
    got = _curve(tmp_path / "plots")
    assert max(abs(a - b) for a, b in zip(got, ref)) < TOL, (got, ref)
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    x = torch.randint(3, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (exported(x).logits - ref_model(x).logits).abs().max().item() < 1e-4


def test_a_base_model_without_manifest_needs_the_external_opt_in(tokens, tmp_path):
    from biomed_llama.errors import IntegrityError
    from biomed_llama.train.pretrain import PretrainParams, pretrain_spec

    base = tmp_path / "llama-7b"
    base.mkdir()
    (base / "config.json").write_text("{}")
    raw = H.tiny_params(tmp_path, tokens)
    raw["model"]["base"] = str(base)
    with pytest.raises(IntegrityError, match=r"refusing model .*llama-7b: no manifest.json .*set model.base_external: true"):
        pretrain_spec(PretrainParams.of(H.validate(raw)))
    raw["model"]["base_external"] = True
    spec = pretrain_spec(PretrainParams.of(H.validate(raw)))
    assert str(base) in spec.inputs and str(base) not in spec.verify  # its files are hashed as an input, not verified
    (base / "manifest.json").write_text("{}")  # a stage's output: verified against its manifest, no opt-in needed
    raw["model"]["base_external"] = False
    assert str(base) in pretrain_spec(PretrainParams.of(H.validate(raw))).verify


def _spawn_cli(params_file: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "biomed_llama", "pretrain", "--params", str(params_file)]
    return subprocess.Popen(cmd, env=H.env_for_subprocess(), cwd=H.REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def straight(tokens, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("straight")
    return _run(tmp, tokens, max_steps=10, checkpoint_every=5, keep_checkpoints=1), tmp


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGUSR1], ids=["kill", "sigusr1"])
def test_resume_is_exact(tokens, straight, tmp_path, sig):
    full, full_dir = straight
    raw = H.tiny_params(tmp_path, tokens, max_steps=10, checkpoint_every=5)
    params_file = H.write_params_file(tmp_path / "params.yaml", raw)
    proc = _spawn_cli(params_file)
    # SIGKILL once step 6 is logged (the step-5 checkpoint is then complete); SIGUSR1 (Slurm's warning) at step 3
    _wait_for_line(proc, "step 6/10" if sig == signal.SIGKILL else "step 3/10")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    ckpts = H.run_checkpoints(tmp_path / "ckpt")
    if sig == signal.SIGUSR1:
        assert proc.returncode == 128 + signal.SIGUSR1, err[-2000:]
        assert f"stopped by signal {int(signal.SIGUSR1)}" in err and "Traceback" not in err
        step, folder = ckpts[-1]
        assert 3 <= step < 10
        assert {"trainer.json", ".metadata", "rng-rank0.json"} <= {p.name for p in folder.iterdir()}
    else:
        assert proc.returncode == -signal.SIGKILL
        assert ckpts[-1][0] == 5
    assert not list((tmp_path / "ckpt").glob("*/*.tmp"))
    resumed = _run(tmp_path, tokens, max_steps=10, checkpoint_every=5)
    # losses of the resumed steps and the whole curve equal the straight run's exactly
    assert resumed.losses == {s: full.losses[s] for s in resumed.losses}
    assert _curve(tmp_path / "plots") == [full.losses[s] for s in range(1, 11)]
    a, b = _weights(full_dir / "model"), _weights(tmp_path / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [s for s, _ in H.run_checkpoints(tmp_path / "ckpt")][-1] == 10  # same run folder, resumed


def test_half_written_checkpoint_is_ignored(tmp_path):
    from biomed_llama.train.checkpoint import latest_checkpoint

    (tmp_path / "step-00000005").mkdir()
    (tmp_path / "step-00000005" / "trainer.json").write_text("{}")
    (tmp_path / "step-00000010.tmp").mkdir()  # crashed mid-save
    (tmp_path / "step-00000015").mkdir()  # no trainer.json: never completed
    assert latest_checkpoint(tmp_path).name == "step-00000005"


def test_other_params_start_a_fresh_run_beside_the_first(tokens, straight, tmp_path, capsys):
    """`dvc repro` after a param change: the persisted checkpoint_dir holds the first run's folder; the
    new run neither resumes nor refuses it: it trains from step 1 in its own folder, leaving it untouched."""
    from biomed_llama.train.checkpoint import list_checkpoints

    full, full_dir = straight
    shutil.copytree(full_dir / "ckpt", tmp_path / "ckpt")
    (first,) = H.run_dirs(tmp_path / "ckpt")
    before = H.tree_digest(first)
    other = _run(tmp_path, tokens, max_steps=10, checkpoint_every=5, lr=1e-3)
    assert sorted(other.losses) == list(range(1, 11))
    assert other.losses[1] == full.losses[1]  # the same init and first batch; lr acts from step 2 on
    assert other.losses[10] != full.losses[10]
    assert _curve(tmp_path / "plots") == [other.losses[s] for s in range(1, 11)]
    out = capsys.readouterr().out
    assert f"other runs' folders there, left untouched: {first.name}" in out and "resumed" not in out
    second = [d for d in H.run_dirs(tmp_path / "ckpt") if d != first]
    assert len(second) == 1 and [s for s, _ in list_checkpoints(second[0])] == [5, 10]  # keep 2, own folder
    assert H.tree_digest(first) == before
    # the rerun of that second command resumes its own folder: nothing retrained, same numbers
    again = _run(tmp_path, tokens, max_steps=10, checkpoint_every=5, lr=1e-3)
    assert again.losses == other.losses and "resumed from" in capsys.readouterr().out


def test_checkpoint_of_another_run_in_a_run_folder_is_refused(tokens, straight, tmp_path):
    """A trainer.json whose recorded run is not its folder's (moved or edited by hand) is not resumed."""
    from biomed_llama.errors import UserError

    _, full_dir = straight
    shutil.copytree(full_dir / "ckpt", tmp_path / "ckpt")
    (_, folder), = H.run_checkpoints(tmp_path / "ckpt")
    state = json.loads((folder / "trainer.json").read_text())
    (folder / "trainer.json").write_text(json.dumps({**state, "run": "0123456789abcdef"}))
    with pytest.raises(UserError, match="was written by run 0123456789abcdef"):
        _run(tmp_path, tokens, max_steps=10, checkpoint_every=5)


def test_new_token_content_trains_fresh_with_the_same_params(tmp_path, capsys):
    """Tokenize reran (e.g. `tokenize.append_eos` flipped) and wrote other tokens at the same path: the
    same params must not resume (and re-export) the checkpoint of the old stream."""
    tokens = H.make_tokens(tmp_path / "tokens", n_docs=40)
    first = _run(tmp_path, tokens, max_steps=2, checkpoint_every=1, keep_checkpoints=1)
    (old_run,) = H.run_dirs(tmp_path / "ckpt")
    before = H.tree_digest(old_run)
    shutil.rmtree(tokens)
    H.make_tokens(tokens, n_docs=40, seed=1)
    capsys.readouterr()
    second = _run(tmp_path, tokens, max_steps=2, checkpoint_every=1, keep_checkpoints=1)
    assert sorted(second.losses) == [1, 2] and second.losses[1] != first.losses[1]  # trained on the new stream
    assert "resumed" not in capsys.readouterr().out
    assert len(H.run_dirs(tmp_path / "ckpt")) == 2 and H.tree_digest(old_run) == before


def test_run_id_follows_token_file_hashes_not_the_manifest_environment(tokens, tmp_path):
    """Rewriting the tokenize manifest with another environment/params (a new commit) keeps the run id;
    a changed file hash changes it."""
    from biomed_llama.train.pretrain import PretrainParams, run_fingerprint

    copy = tmp_path / "tokens"
    shutil.copytree(tokens, copy)
    params = H.validate(H.tiny_params(tmp_path, copy))
    run_id = run_fingerprint(PretrainParams.of(params), 6)
    assert run_fingerprint(PretrainParams.of(H.validate(H.tiny_params(tmp_path, tokens))), 6) == run_id  # path moved, same content
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "environment": {"git": "another"}, "params": {}}))
    assert run_fingerprint(PretrainParams.of(params), 6) == run_id
    name = next(iter(manifest["files"]))
    manifest["files"][name]["sha256"] = "0" * 64
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert run_fingerprint(PretrainParams.of(params), 6) != run_id
    assert run_fingerprint(PretrainParams.of(H.validate(H.tiny_params(tmp_path, copy, subsets=["pubmed_central"]))), 6) != run_id


def test_activation_checkpointing_keeps_the_losses(tokens, reference, tmp_path):
    ref, _ = reference
    for mode in ("full", "selective"):
        got = _run(tmp_path / mode, tokens, activation_checkpointing=mode, max_steps=6)
        assert max(abs(got.losses[s] - ref[s - 1]) for s in got.losses) < TOL, mode


def test_rerun_of_a_finished_run_trains_nothing_and_keeps_metrics(tokens, straight):
    full, full_dir = straight
    assert [s for s, _ in H.run_checkpoints(full_dir / "ckpt")] == [10]  # keep_checkpoints=1 pruned step 5
    again = _run(full_dir, tokens, max_steps=10, checkpoint_every=5)
    assert again.losses == full.losses and again.metrics["final_loss"] == full.metrics["final_loss"]
    assert again.metrics["steps"] == 10 and again.metrics["tokens_per_s"] == full.metrics["tokens_per_s"]


def test_tampered_tokens_are_refused(tmp_path):
    from biomed_llama.errors import IntegrityError

    tokens = H.make_tokens(tmp_path / "tokens")
    path = tokens / "pubmed_central" / "train" / "tokens.bin"
    data = bytearray(path.read_bytes())
    data[10] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="tokens.bin: sha256 differs"):
        _run(tmp_path, tokens)


@pytest.mark.integration
def test_sigterm_under_torchrun_saves_and_resumes_on_another_world_size(tokens, straight, tmp_path):
    """2 ranks get SIGTERM (torchrun forwards it), agree, save one complete checkpoint, exit; a
    1-process rerun reshards it and ends where the straight run ends."""
    full, _ = straight
    raw = H.tiny_params(tmp_path, tokens, max_steps=10, checkpoint_every=5, micro_batch_size=1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "biomed_llama", "pretrain", "--params", str(H.write_params_file(tmp_path / "params.yaml", raw))]
    proc = subprocess.Popen(cmd, env=H.env_for_subprocess(), cwd=H.REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_line(proc, "step 2/10")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "stopped by signal 15" in err, err[-3000:]
    step, folder = H.run_checkpoints(tmp_path / "ckpt")[-1]  # same params (micro size aside): one run folder
    assert 2 <= step < 10
    assert {"trainer.json", ".metadata", "rng-rank0.json", "rng-rank1.json"} <= {p.name for p in folder.iterdir()}
    assert not list((tmp_path / "ckpt").glob("*/*.tmp"))
    resumed = _run(tmp_path, tokens, max_steps=10, checkpoint_every=5, micro_batch_size=1)
    assert len(H.run_dirs(tmp_path / "ckpt")) == 1
    assert max(abs(resumed.losses[s] - full.losses[s]) for s in range(1, 11)) < TOL
