"""The size overlays of bench/e2e.sh: gpu-smoke.yaml changes sizes, speed and launch only, and says why for
each key; composed with the paper profile it names exactly the inputs scripts/make_gpu_inputs.py writes."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest

from biomed_llama.config import load_params
from biomed_llama.profiles import DELETE, load_profile, read_layer, write_composed
from tests.helpers import REPO, load_script

GPU = REPO / "configs/overlays/gpu-smoke.yaml"
CPU = REPO / "configs/overlays/cpu-smoke.yaml"
PAPER = REPO / "configs/paper.yaml"

# The keys the GPU size overlay may set, by kind. Nothing that changes how a number is computed from the
# same inputs at the same size: no scoring (eval.fewshot, shots, mc_metric, backend, dtype, max_length,
# generation.max_new_tokens / padding_side / medmcqa_split / finetune_input), tokenization (tokenize.*,
# finetune.tokenization, truncation), packing (pretrain.packing, max_seq_length, finetune.max_length,
# released_loader, shuffle), loss (loss_weighting), optimizer or schedule (*.optim.*, epochs) key.
GPU_ALLOWED = {
    # SIZE: how much is run (the depth and the data volume come from the generated inputs)
    "pretrain.global_batch_size", "pretrain.max_steps", "instruct_mix.n_records", "finetune.tasks.*.seeds",
    # SPEED: the trained and scored numbers are the same (micro batches, checkpoint cadence, eval workers) or equal up to
    # fp16 near-ties (eval.generation_speed, not a DVC param; bench/bench_generate.py counts them)
    "pretrain.micro_batch_size", "pretrain.checkpoint_every", "finetune.instruct.micro_batch_size",
    "finetune.task.micro_batch_size", "eval.generation_speed.batch_size", "eval.token_budget", "eval.generation_speed.sort_by_length",
    "eval.workers",
    # RUN: the profile's name and where the stages run
    "profile", "launch.mode", "launch.nproc_per_node", "launch.container",
    # INPUTS: the stand-in models of the seed table's other rows (generated; `external`: made by no stage)
    "eval.models.*.path", "eval.models.*.external",
}
# Never in a size overlay, whatever GPU_ALLOWED says (a second guard on the list above).
FORBIDDEN = ("seed", "tokenize.*", "*.optim.*", "*.loss_weighting", "pretrain.packing", "pretrain.max_seq_length",
             "pretrain.released_loader*", "pretrain.shuffle", "finetune.tokenization", "finetune.truncation",
             "finetune.max_length", "finetune.*.epochs", "instruct_mix.allocation", "instruct_mix.seed",
             "instruct_mix.sources", "eval.fewshot*", "eval.shots", "eval.mc_metric", "eval.backend", "eval.dtype",
             "eval.max_length", "eval.generation.*",
             "eval.models.*.suites",
             "eval.models.*.tasks", "readers.*")
# The CPU overlay may in addition move the run to the CPU (device, dtypes, compile, recomputation), set the
# data stages' workers, and shorten the padded sequence lengths and batches (every sequence is padded to its
# length: at 2,048 a CPU step took 15-45 s); it is a smoke on 2 cores, never a result.
CPU_ALLOWED = GPU_ALLOWED | {"model.attention", "pretrain.device", "pretrain.param_dtype", "pretrain.reduce_dtype", "pretrain.compile",
                             "pretrain.activation_checkpointing", "pretrain.max_seq_length", "finetune.max_length",
                             "finetune.*.global_batch_size", "finetune.*.micro_batch_size", "extract.workers",
                             "tokenize.workers", "eval.device", "eval.dtype", "eval.batch_size"}


def leaves(data: dict, where: str = "") -> list[str]:
    """Dotted paths of every leaf of an overlay (a value that replaces whole, or a `!delete`)."""
    out = []
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if isinstance(value, dict) and value is not DELETE:
            out += leaves(value, path)
        else:
            out.append(path)
    return out


def matches(path: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(path, p) for p in patterns)


@pytest.mark.parametrize("overlay,allowed", [(GPU, GPU_ALLOWED), (CPU, CPU_ALLOWED)], ids=["gpu-smoke", "cpu-smoke"])
def test_size_overlay_sets_only_allowed_keys(overlay, allowed):
    keys = leaves(read_layer(overlay))
    assert keys, "an empty overlay"
    assert [k for k in keys if not matches(k, allowed)] == []
    if overlay == GPU:
        assert [k for k in keys if matches(k, FORBIDDEN)] == []


def test_the_guards_catch_a_computing_key():
    """The checks above can fail: an optimizer, a packing and a scoring key are outside the allowed set."""
    for key in ("pretrain.optim.lr", "pretrain.packing", "eval.generation.max_new_tokens", "finetune.task.epochs"):
        assert not matches(key, GPU_ALLOWED) and matches(key, FORBIDDEN), key


@pytest.mark.parametrize("overlay", [GPU, CPU], ids=["gpu-smoke", "cpu-smoke"])
def test_every_key_of_the_overlay_says_why(overlay):
    """Each key set carries a comment on its line or in the comment block right above it."""
    lines = overlay.read_text().splitlines()
    for path in leaves(read_layer(overlay)):
        key = path.split(".")[-1]
        idx = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith((f"{key}:", f"- {key}:"))
                   or f" {key}: " in ln.split("#")[0] or f"{{{key}: " in ln)
        above = next((lines[j] for j in range(idx - 1, -1, -1) if lines[j].strip()), "")
        assert "#" in lines[idx] or above.lstrip().startswith("#"), f"{overlay.name}: {path} has no comment"


def test_gpu_overlay_keeps_the_paper_values_that_compute_numbers():
    """Composed, every section the overlay leaves alone is the paper's, byte for byte."""
    paper = load_params(PAPER)
    smoke = load_profile([PAPER, GPU])
    for section in ("extract", "tokenize", "model", "readers"):
        assert getattr(smoke, section) == getattr(paper, section), section
    assert smoke.pretrain.optim == paper.pretrain.optim and smoke.pretrain.packing == paper.pretrain.packing
    assert smoke.finetune.instruct.optim == paper.finetune.instruct.optim
    assert smoke.eval.generation.max_new_tokens == paper.eval.generation.max_new_tokens
    assert smoke.instruct_mix.sources == paper.instruct_mix.sources  # all 20 released sources
    assert smoke.finetune.tasks["medqa"].seeds == [1234, 1235]
    assert smoke.launch.mode == "local"


@pytest.fixture(scope="module")
def cpu_inputs(tmp_path_factory) -> tuple[Path, dict]:
    """scripts/make_gpu_inputs.py at the CPU size, into a scratch root."""
    root = tmp_path_factory.mktemp("inputs")
    gen = load_script("make_gpu_inputs")
    report = gen.generate(root, "cpu", dict(gen.CPU_MODEL), jobs=1)
    return root, report


def test_generated_inputs_are_every_input_the_composed_profile_reads(cpu_inputs, tmp_path, monkeypatch):
    root, report = cpu_inputs
    write_composed([PAPER, GPU, CPU], root / "params.yaml")
    monkeypatch.chdir(root)
    p = load_params("params.yaml")  # also checks every input lies under its `inputs` root
    files = [s for src in p.instruct_mix.sources for s in src.paths] + [t.path for t in p.finetune.tasks.values()]
    files += [v for k, v in p.eval.benchmarks.model_dump().items() if k != "pile_extracted" and v]  # medmcqa_test: unused
    assert [f for f in files if not Path(f).is_file()] == []
    assert len(p.instruct_mix.sources) == 20
    for model_dir in [p.model.base, p.tokenize.tokenizer] + [m.path for m in p.eval.models.values()
                                                               if m.external]:
        assert (Path(model_dir) / "config.json").is_file() or (Path(model_dir) / "tokenizer.json").is_file(), model_dir
    assert sorted(Path("data/pile").rglob("*.jsonl.zst")) == sorted(
        Path("data/pile", n) for n in ("train/00.jsonl.zst", "train/01.jsonl.zst", "val.jsonl.zst", "test.jsonl.zst"))


def test_generated_tokenizer_is_llama_format(cpu_inputs):
    from transformers import AutoConfig, AutoTokenizer

    root, report = cpu_inputs
    tok = AutoTokenizer.from_pretrained(root / "models/llama-7b")
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (1, 2, 0)
    assert len(tok) == report["vocab"] == 1000
    assert tok.convert_ids_to_tokens([3, 258]) == ["<0x00>", "<0xFF>"]  # byte fallback pieces
    ids = tok("Ω")["input_ids"]
    assert ids[0] == 1 and tok.convert_ids_to_tokens(ids[1:]) == ["▁", "<0xCE>", "<0xA9>"]
    cfg = AutoConfig.from_pretrained(root / "models/llama-7b")
    assert (cfg.model_type, cfg.vocab_size, cfg.num_hidden_layers) == ("llama", 1000, 2)
    tok_cfg = json.loads((root / "models/llama-7b/tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"].startswith("LlamaTokenizer")


def test_generator_is_deterministic(tmp_path):
    """Same seed, same bytes: a Pile file and the tokenizer trained on it."""
    gen = load_script("make_gpu_inputs")
    counts = {"PubMed Abstracts": 5, "PubMed Central": 1, "Github": 2}
    for d in ("a", "b"):
        gen.write_shard((str(tmp_path / d), "test.jsonl.zst", counts, 7))
        texts = gen.read_texts(tmp_path / d / "data/pile/test.jsonl.zst")
        gen.train_tokenizer(texts, 400, tmp_path / d / "tok")
    for rel in ("data/pile/test.jsonl.zst", "tok/tokenizer.json"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    lengths = [len(t.encode()) for t in texts]
    assert max(lengths) >= gen.LENGTHS["PubMed Central"][2]  # a full paper, not an abstract-sized stub
