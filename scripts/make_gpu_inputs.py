#!/usr/bin/env python3
"""Generate every raw input of the paper profile, at realistic sizes, for an end-to-end run (bench/e2e.sh).

The paper profile (configs/paper.yaml) reads downloads: The Pile, the 20 released instruction sources,
the benchmark files and LLaMA-7B. This script writes stand-ins for all of them AT THE PAPER'S PATHS
under `--root` (so the size overlay configs/overlays/gpu-smoke.yaml changes no input path), generated
from templates and invented vocabulary, nothing copied, seeded and deterministic:

- `data/pile/{train/NN,val,test}.jsonl.zst`: Pile-format records `{"text", "meta": {"pile_set_name"}}`
  of PubMed Abstracts (~1.5 kB each, log-normal), PubMed Central (~30 kB, full papers with sections)
  and other subsets extraction drops (Wikipedia (en), Github, FreeLaw), zstd-compressed; the text
  generators are scripts/make_sample.py's, grown to the real lengths;
- `data/raw/…`: the 20 released instruction sources in their published record formats (MedQA US
  4-option train JSON lines, MedMCQA train.json, PubMedQA ori_pqaa.json, the two Alpaca JSON lists,
  the 15 medpalm / CoT exemplar sets) from scripts/make_instruct_fixtures.py's record generators;
- `data/benchmarks/…`: MedQA-USMLE 4 and 5 options (1,273 test questions each), MedMCQA dev
  (4,183), PubMedQA ori_pqal.json (1,000) at the real sizes, plus few-shot train pools, written by
  scripts/synth_benchmarks.py (bench/bench_eval.py's writer);
- `models/llama-7b/`: a LLaMA-format tokenizer (BPE with byte fallback and the `▁` word marker, what
  SentencePiece's BPE makes and transformers' LLaMA converter reads; `<unk>` 0, `<s>` 1, `</s>` 2,
  `<0x00>`…`<0xFF>` 3-258; 32,000 pieces at the gpu size) trained on the generated Pile text with the
  `tokenizers` library, saved as a Hugging Face Llama tokenizer directory; and a random-initialised
  LlamaForCausalLM of the 7B's head size and FFN ratio at reduced depth (and width, see GPU_MODEL),
  safetensors in bf16, read through `model.base_external: true` as the downloaded LLaMA-7B is;
- `models/{gpt-neo-2.7b,biomedlm-2.7b,pmc-llama-7b}/`: small random-initialised stand-ins for the
  seed table's other 0-shot rows in their own architectures (GPT-Neo, GPT-2 as BioMedLM, LLaMA).

    python scripts/make_gpu_inputs.py --root . --size gpu     # ~180 MB of Pile text (see the report)
    python scripts/make_gpu_inputs.py --root . --size cpu     # the CPU smoke's tiny version

Same arguments, same bytes (the model weights included); `--jobs` only changes the speed.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# BPE training must not depend on thread scheduling (as scripts/make_sample.py): before `tokenizers` loads.
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_instruct_fixtures as mif  # noqa: E402  (the published instruction formats' record generators)
import make_sample as ms  # noqa: E402  (the Pile text generators)
from synth_benchmarks import write_benchmarks  # noqa: E402  (bench/bench_eval.py's benchmark writer)

SEED = 20261207

# Documents per subset in each Pile file. gpu: ~38 MB a train shard, ~180 MB in all; the test split holds
# ~5 MB of each PubMed subset (the perplexity rows' text, as bench/bench_eval.py measured).
PILE = {
    "gpu": {
        **{f"train/{i:02d}.jsonl.zst": {"PubMed Abstracts": 6000, "PubMed Central": 300, "Wikipedia (en)": 2500,
                                        "Github": 1200, "FreeLaw": 600} for i in range(4)},
        "val.jsonl.zst": {"PubMed Abstracts": 750, "PubMed Central": 40, "Wikipedia (en)": 300, "Github": 150,
                          "FreeLaw": 80},
        "test.jsonl.zst": {"PubMed Abstracts": 3300, "PubMed Central": 170, "Wikipedia (en)": 500, "Github": 250,
                           "FreeLaw": 120},
    },
    "cpu": {
        **{f"train/{i:02d}.jsonl.zst": {"PubMed Abstracts": 60, "PubMed Central": 3, "Wikipedia (en)": 10,
                                        "Github": 6, "FreeLaw": 3} for i in range(2)},
        "val.jsonl.zst": {"PubMed Abstracts": 10, "PubMed Central": 1, "Wikipedia (en)": 3, "Github": 2, "FreeLaw": 1},
        "test.jsonl.zst": {"PubMed Abstracts": 12, "PubMed Central": 2, "Wikipedia (en)": 3, "Github": 2, "FreeLaw": 1},
    },
}
# Document length in bytes per subset: log-normal (median, sigma), clipped. The Pile's PubMed Abstracts
# average ~1.5 kB and its PubMed Central papers ~30 kB; the others are roughly the Pile's.
LENGTHS = {"PubMed Abstracts": (1400, 0.35, 400, 5000), "PubMed Central": (26000, 0.5, 6000, 150000),
           "Wikipedia (en)": (2500, 0.7, 400, 30000), "Github": (4000, 0.8, 300, 40000),
           "FreeLaw": (10000, 0.8, 800, 80000)}

# The benchmark files: test sets at the real sizes at both sizes of the gpu run; the train files are
# few-shot pools only (their draws are all that is read), kept below the real 10,178 / 182,822 items.
BENCH = {"gpu": {"medqa4": 1273, "medqa5": 1273, "medmcqa": 4183, "pubmedqa": 1000,
                 "medqa4_train": 2000, "medqa5_train": 2000, "medmcqa_train": 5000},
         "cpu": {"medqa4": 12, "medqa5": 12, "medmcqa": 16, "pubmedqa": 10,
                 "medqa4_train": 20, "medqa5_train": 20, "medmcqa_train": 30}}

# Records per instruction source (the draw takes instruct_mix.n_records from them by the released
# weights; the task fine-tunes train on the first three: steps = ceil(3 epochs × n / batch)).
INSTRUCT = {"gpu": {"medqa": 256, "medmcqa": 256, "pubmedqa": 256, "alpaca": 400, "examples": 8},
            "cpu": {"medqa": 32, "medmcqa": 32, "pubmedqa": 32, "alpaca": 16, "examples": 2}}  # one batch of cpu-smoke

# The "LLaMA-7B": LLaMA-7B's head size (128), FFN ratio (11008 / 4096) and vocabulary (32,000) at reduced
# depth and width. Why not the 7B width (4096, 32 heads, 11008)? Disk: every training run of the paper
# profile ends with a checkpoint of fp32 weights and both AdamW moments (12 B a parameter), and the
# profile trains 11 models (pretrain, 2 × (instruct + medqa × 2 seeds + medmcqa + pubmedqa)): at the 7B
# width and 2 layers (667M parameters, 262M of them embeddings) that is 11 × 8.0 GB = 88 GB, beyond the
# GPU machine's 64 GiB disk. Why 1,024 and not 2,048 (232M, 11 × 2.8 GB, the first GPU run)? Time: the whole
# `dvc repro evaluate` must fit one 10-minute device call, and at 2,048 the eleven trainings' steps, exports and
# DVC hashing alone took 4 of those minutes (bench/RESULTS.md); at 1,024 (90M parameters) every step, export
# and hash is about 2.5× cheaper. `--hidden 4096 --heads 32 --ffn 11008` gives the 7B width where disk and
# time allow it; `--hidden 2048 --heads 16 --ffn 5504` the first run's.
GPU_MODEL = {"hidden": 1024, "heads": 8, "ffn": 2752, "layers": 2, "vocab": 32000}
CPU_MODEL = {"hidden": 64, "heads": 4, "ffn": 172, "layers": 2, "vocab": 1000}
STANDINS = {"gpu": {"hidden": 256, "layers": 2, "heads": 4}, "cpu": {"hidden": 32, "layers": 1, "heads": 2}}

SPECIALS = ["<unk>", "<s>", "</s>"]
BYTES = [f"<0x{b:02X}>" for b in range(256)]


# ---- The Pile ----

def _length(rng: random.Random, subset: str) -> int:
    median, sigma, lo, hi = LENGTHS[subset]
    return int(min(hi, max(lo, median * math.exp(rng.gauss(0, sigma)))))


def document(rng: random.Random, subset: str) -> str:
    """One document of `subset` grown to a length drawn from LENGTHS: make_sample.py's generator for the
    start, then more of the same kind (results sentences, paper sections, paragraphs) until it is reached."""
    target = _length(rng, subset)
    text = ms.GENERATORS[subset](rng)
    while len(text) < target:
        if subset == "PubMed Abstracts":
            text += " " + ms._abstract_parts(rng)[rng.choice(["results", "methods", "background"])]
        elif subset == "PubMed Central":
            body = ms.pubmed_central(rng)
            text += "\n\n" + body[body.index("==== Body") + len("==== Body\n\n"):body.index("\n\n==== Refs")]
        else:
            text += "\n\n" + ms.GENERATORS[subset](rng)
    return text


def write_shard(args: tuple[str, str, dict[str, int], int]) -> tuple[str, int, int]:
    """Write one Pile file (its own seeded generator, so shards can run in parallel); (name, text bytes, file bytes)."""
    import zstandard

    root, name, counts, seed = args
    rng = random.Random(f"{seed}:{name}")
    subsets = [s for s, n in counts.items() for _ in range(n)]
    rng.shuffle(subsets)
    lines = [json.dumps({"text": document(rng, s), "meta": {"pile_set_name": s}}) for s in subsets]
    raw = ("\n".join(lines) + "\n").encode("utf-8")
    path = Path(root) / "data/pile" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(raw)
    path.write_bytes(data)
    return name, len(raw), len(data)


def read_texts(path: Path, max_bytes: int | None = None) -> list[str]:
    """The texts of a Pile file, up to about `max_bytes` of text."""
    import zstandard

    texts, total = [], 0
    with open(path, "rb") as f:
        for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8"):
            texts.append(json.loads(line)["text"])
            total += len(texts[-1])
            if max_bytes and total >= max_bytes:
                break
    return texts


# ---- The LLaMA-format tokenizer ----

def train_tokenizer(texts: list[str], vocab: int, out: Path) -> int:
    """Train a LLaMA-format BPE on `texts` and save it as a HF Llama tokenizer directory; return its size.

    As LLaMA's SentencePiece model read by transformers' LlamaConverter: pieces mark a word start with
    `▁` (Metaspace, prepended to the first word), unknown characters fall back to `<0xNN>` byte pieces,
    ids 0-2 are `<unk>`, `<s>`, `</s>` and 3-258 the 256 byte pieces, then the merges in training order.
    The tokenizer adds `<s>` and no `</s>`, as LLaMA's.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaTokenizer

    learner = Tokenizer(models.BPE(unk_token="<unk>"))
    learner.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab - len(BYTES), special_tokens=SPECIALS, min_frequency=2,
                                  limit_alphabet=200, show_progress=False)
    learner.train_from_iterator(texts, trainer=trainer)
    learned = json.loads(learner.to_str())["model"]
    pieces = SPECIALS + BYTES + [p for p, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1])
                                 if p not in SPECIALS]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab={p: i for i, p in enumerate(pieces)}, merges=merges, unk_token="<unk>",
                               byte_fallback=True, fuse_unk=True))
    # split=False: like SentencePiece, the text is not cut at spaces (merges never cross a `▁` anyway).
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    hf = LlamaTokenizer(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                        add_bos_token=True, add_eos_token=False, clean_up_tokenization_spaces=False)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    hf.save_pretrained(str(out))
    return len(pieces)


def check_tokenizer(path: Path, texts: list[str]) -> None:
    """Raise AssertionError unless the saved tokenizer loads as LLaMA's does and round-trips `texts`."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (1, 2, 0), "LLaMA's special ids"
    for t in texts + ["Ünïcode → ✓ 🧬"]:
        ids = tok(t)["input_ids"]
        assert ids[0] == 1 and ids[-1] != 2, "adds <s>, not </s>"
        assert tok.decode(ids, skip_special_tokens=True) == t, f"round trip failed for {t[:60]!r}"


# ---- Models ----

def _save(model, tokenizer_dir: Path, out: Path) -> None:
    """Save `model` (bf16 safetensors) with the tokenizer files of `tokenizer_dir` as a HF directory."""
    import torch

    model.to(torch.bfloat16).save_pretrained(str(out), safe_serialization=True)
    for f in tokenizer_dir.iterdir():
        if f.is_file() and not (out / f.name).exists():
            shutil.copy2(f, out / f.name)


def write_llama(out: Path, shape: dict[str, int], vocab: int, seed: int) -> int:
    """The random-initialised "LLaMA-7B" (LlamaForCausalLM, bf16 safetensors) beside its tokenizer; its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=shape["hidden"], intermediate_size=shape["ffn"],
                      num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                      max_position_embeddings=2048, rms_norm_eps=1e-6, initializer_range=0.02,
                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    n = sum(p.numel() for p in model.parameters())
    model.to(torch.bfloat16).save_pretrained(str(out), safe_serialization=True)  # beside the tokenizer files
    return n


def write_standins(root: Path, shape: dict[str, int], seed: int) -> list[str]:
    """Small random-initialised models for the seed table's other 0-shot rows, each in its own architecture
    (GPT-Neo; GPT-2, BioMedLM's, with its 1,024 positions; LLaMA) with a byte-level BPE tokenizer (the
    demo's, GPT-2's kind) or, for PMC-LLaMA, the LLaMA-format one."""
    import torch
    from transformers import (GPT2Config, GPT2LMHeadModel, GPTNeoConfig, GPTNeoForCausalLM, LlamaConfig,
                              LlamaForCausalLM)

    repo = Path(__file__).resolve().parents[1]
    bpe, llama_tok = repo / "data/sample/tokenizer", root / "models/llama-7b"
    h, L, heads = shape["hidden"], shape["layers"], shape["heads"]
    specs = {
        "gpt-neo-2.7b": (GPTNeoForCausalLM, GPTNeoConfig(vocab_size=4096, hidden_size=h, num_layers=L, num_heads=heads,
                                                         attention_types=[[["global", "local"], L // 2]] if L % 2 == 0 else [[["global"], L]],
                                                         max_position_embeddings=2048, bos_token_id=1,
                                                         eos_token_id=2), bpe),
        "biomedlm-2.7b": (GPT2LMHeadModel, GPT2Config(vocab_size=4096, n_embd=h, n_layer=L, n_head=heads,
                                                      n_positions=1024, bos_token_id=1, eos_token_id=2), bpe),
        "pmc-llama-7b": (LlamaForCausalLM, LlamaConfig(vocab_size=len(json.loads(
            (llama_tok / "tokenizer.json").read_text())["model"]["vocab"]), hidden_size=h, intermediate_size=h * 8 // 3,
            num_hidden_layers=L, num_attention_heads=heads, max_position_embeddings=2048, bos_token_id=1,
            eos_token_id=2), llama_tok),
    }
    for i, (name, (cls, cfg, tok)) in enumerate(specs.items()):
        torch.manual_seed(seed + 1 + i)
        out = root / "models" / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        _save(cls(cfg), tok, out)
        for f in ("tokenizer.json", "tokenizer_config.json"):  # a tokenizer whose files _save copied
            assert (out / f).is_file(), (name, f)
    return list(specs)


# ---- Instruction sources ----

def write_instruct(root: Path, n: dict[str, int], seed: int) -> dict[str, int]:
    """The 20 released sources at configs/paper.yaml's paths (instruct_mix.sources, finetune.tasks); {path: records}."""
    r = random.Random(seed)
    raw = root / "data/raw"
    files: dict[str, object] = {
        "medqa/questions/US/4_options/phrases_no_exclude_train.jsonl": mif.medqa(r, n["medqa"], 4),
        "medmcqa/train.json": mif.medmcqa(r, n["medmcqa"], 1),  # the release's JSON lines, cop 1-4
        "pubmedqa/ori_pqaa.json": mif.pubmedqa(r, n["pubmedqa"], ("yes", "no"), 20000011),
        "alpaca/alpaca_data_cleaned.json": mif.alpaca(r, n["alpaca"], medical=False),
        "visual-med-alpaca/med_alpaca_data.json": mif.alpaca(r, n["alpaca"], medical=True),
    }
    for setname, subs in mif.RELEASED_SUBSOURCES.items():
        for sub, kind in subs.items():
            files[f"examples/{sub}_{setname}.json"] = [mif.example(r, kind, cot=setname.endswith("-cot"))
                                                       for _ in range(n["examples"])]
    files["examples/mmlu_cot.json"] = mif.examples(r, n["examples"], cot=True)
    files["examples/codex_cot.json"] = mif.examples(r, n["examples"], cot=True)
    counts = {}
    for rel, recs in files.items():
        path = raw / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        text = mif._jsonl(recs) if rel.endswith((".jsonl", "medmcqa/train.json")) else mif._json(recs)
        path.write_text(text, encoding="utf-8")
        counts[f"data/raw/{rel}"] = len(recs)
    return counts


# ---- All of it ----

def generate(root: Path, size: str, shape: dict[str, int], jobs: int) -> dict:
    """Write every input under `root`; return a report (sizes, counts, seconds per part)."""
    t, report = time.perf_counter(), {"size": size, "model_shape": shape, "seconds": {}}

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        report["seconds"][name] = round(now - t, 1)
        t = now

    shutil.rmtree(root / "data/pile", ignore_errors=True)
    work = [(str(root), name, counts, SEED) for name, counts in PILE[size].items()]
    if jobs <= 1:
        shards = [write_shard(w) for w in work]
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            shards = list(pool.map(write_shard, work))
    report["pile"] = {n: {"text_bytes": a, "zst_bytes": b} for n, a, b in shards}
    report["pile_text_mb"] = round(sum(a for _, a, _ in shards) / 1e6, 1)
    report["pile_zst_mb"] = round(sum(b for _, _, b in shards) / 1e6, 1)
    lap("pile")

    # The tokenizer learns from the first train shard's first ~12 MB (every subset; enough for 32k pieces).
    sample = read_texts(root / "data/pile/train/00.jsonl.zst", 12_000_000 if size == "gpu" else None)
    tok_dir = root / "models/llama-7b"
    report["vocab"] = train_tokenizer(sample, shape["vocab"], tok_dir)
    check_tokenizer(tok_dir, sample[:50])
    lap("tokenizer")

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    shutil.rmtree(root / "data/benchmarks", ignore_errors=True)
    write_benchmarks(root / "data/benchmarks", BENCH[size], random.Random(SEED + 1), tok)
    report["benchmarks"] = BENCH[size]
    lap("benchmarks")

    shutil.rmtree(root / "data/raw", ignore_errors=True)
    report["instruct"] = write_instruct(root, INSTRUCT[size], SEED + 2)
    lap("instruct")

    report["llama_params"] = write_llama(tok_dir, shape, report["vocab"], SEED + 3)
    report["standins"] = write_standins(root, STANDINS[size], SEED + 4)
    lap("models")
    report["model_mb"] = round(sum(f.stat().st_size for f in tok_dir.iterdir()) / 1e6, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    """CLI: generate the inputs under `--root` at `--size`, print the report as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."), help="the checkout the pipeline runs in")
    ap.add_argument("--size", choices=["gpu", "cpu"], default="gpu")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes writing Pile files")
    for key in ("hidden", "heads", "ffn", "layers", "vocab"):
        ap.add_argument(f"--{key}", type=int, default=None, help=f"model {key} (default: GPU_MODEL / CPU_MODEL)")
    ap.add_argument("--report", type=Path, default=None, help="also write the report JSON here")
    args = ap.parse_args(argv)
    shape = dict(GPU_MODEL if args.size == "gpu" else CPU_MODEL)
    shape.update({k: getattr(args, k) for k in shape if getattr(args, k) is not None})
    t0 = time.perf_counter()
    report = generate(args.root.resolve(), args.size, shape, args.jobs)
    report["total_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(report, indent=1)
    if args.report:
        args.report.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
