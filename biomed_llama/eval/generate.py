"""The instructed and fine-tuned rows, scored as the original's `evaluation/main.py` scored them.

main.py (stage `test`, `evaluation/test.sh`) loads the model in float16 with the slow tokenizer,
padding side left (main.py:84-96); its datasets tokenize each prompt with the tokenizer's own
special tokens, so BOS is added (mcqa_dataset.py:125-131, 231-238); batches of 4 in file order are
left-padded (utils/data.py:168-173) and greedily continued for 128 new tokens (main.py:156-181).
Each whole output row is decoded with `skip_special_tokens=True` and the prompt is cut off by
`decoded[len(input_text):]` (main.py:182-188); output and target are both
`.lstrip('( ').strip(' )')`-ed, the target after losing its trailing `</s>`, and compared exactly,
case-sensitively (main.py:189-201). Targets: instruct `({letter}) {answer}</s>`
(mcqa_dataset.py:227), fine-tune ` {answer}</s>` (mcqa_dataset.py:121); for instruct PubMedQA
the target's second word, capitalised (main.py:197-199). Prompts are `instruct.templates`'
(word for word the original's).

Padding: LLaMA's tokenizer has no pad token; the original added `[PAD]` and resized the
embeddings (main.py:98-103) only so that it has an id to pad with and to mask by. Here pad
positions are masked by length and filled with the tokenizer's pad (else EOS) id, a special token
that the decode skips as it skipped `[PAD]`; the model is not changed.
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import Any

from biomed_llama.benchmarks.records import LETTERS, YES_NO_MAYBE
from biomed_llama.eval.config import EvalConfig, GenerationConfig, GenerationSpeed
from biomed_llama.eval.prepare import UNLABELED_SPLIT
from biomed_llama.eval.task_utils import finetune_text, instruct_text, read_jsonl

# Lazy imports: torch and transformers are imported where a model is run: planning and reading outputs start without
# them.

EOS_TEXT = "</s>"  # what main.py:191-192 strips from the end of a target


def instruct_example(doc: dict[str, Any], eos: str) -> tuple[str, str]:
    """(prompt, target) of the instruct datasets: `({letter}) {answer}{eos}` (mcqa_dataset.py:224-227).

    The letter is that of the first option equal to the answer text (`MCQASample.__post_init__`,
    mcqa_dataset.py:22); PubMedQA's options are `yes`, `no`, `maybe` (mcqa_dataset.py:75)."""
    if doc["context"]:
        answer, letter = YES_NO_MAYBE[doc["label"]], LETTERS[doc["label"]]
    else:
        answer = doc["options"][doc["label"]]
        letter = LETTERS[doc["options"].index(answer)]
    return instruct_text(doc), f"({letter}) {answer}{eos}"


def finetune_example(doc: dict[str, Any], eos: str) -> tuple[str, str]:
    """(prompt, target) of the fine-tune datasets: target ` {answer}{eos}` (mcqa_dataset.py:109-121)."""
    answer = YES_NO_MAYBE[doc["label"]] if doc["context"] else doc["options"][doc["label"]]
    return finetune_text(doc), f" {answer}{eos}"


def clean(text: str) -> str:
    """main.py:194-195: leading `(` and spaces, then surrounding spaces and `)`, removed."""
    return text.lstrip("( ").strip(" )")


def gold(target: str, suite: str, task: str) -> str:
    """The string a prediction must equal (main.py:189-199)."""
    if target.endswith(EOS_TEXT):
        target = target[: -len(EOS_TEXT)]
    target = clean(target)
    if suite == "instruct" and task == "pubmedqa":
        target = target.split(" ")[1].capitalize()
    return target


def pad_batch(ids: list[list[int]], filler: int, side: str) -> tuple[list[list[int]], list[list[int]]]:
    """Pad token lists to one length on `side` (utils/data.py:168-177); the mask marks real tokens."""
    width = max(len(x) for x in ids)
    rows, masks = [], []
    for x in ids:
        pad = width - len(x)
        rows.append([filler] * pad + x if side == "left" else x + [filler] * pad)
        masks.append([0] * pad + [1] * len(x) if side == "left" else [1] * len(x) + [0] * pad)
    return rows, masks


def generate_rows(
    model, ids: list[list[int]], filler: int, eos: int | None, gen: GenerationConfig, cache=None, compile: bool = False
) -> list[list[int]]:
    """Greedy continuation of each token list in one `generate` call: each whole output row (pads, prompt, new tokens).

    Without `cache` the call is main.py:174-181's (a growing KV cache, eager). With a static `cache`
    (`static_cache`) it is reset and reused, and `compile` lets transformers compile the decode step."""
    import torch

    rows, masks = pad_batch(ids, filler, gen.padding_side)
    device = next(model.parameters()).device
    extra: dict[str, Any] = {}
    if cache is not None:
        extra[_cache_kwarg(model)] = cache
        extra["disable_compile"] = not compile  # transformers compiles over a static cache on a GPU by itself
    with torch.inference_mode():
        if cache is not None:  # (its tensors were made in inference mode: zeroed there)
            cache.reset()  # the same tensors for every batch of this shape: a compiled step keeps its addresses
        out = model.generate(
            input_ids=torch.tensor(rows, device=device),
            attention_mask=torch.tensor(masks, device=device),
            max_new_tokens=gen.max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=filler,
            eos_token_id=eos,
            **extra,
        )
    return out.tolist()


# Static caches are made in lengths of this many positions, so that tasks of similar prompt lengths share one.
CACHE_STEP = 128


def static_cache(model, batch: int, length: int):
    """A static KV cache for `batch` rows of `length` positions (rounded up to `CACHE_STEP`), kept on the model.

    The same tensors serve every batch of that shape (and the next task of that shape): a compiled decode
    step replays its graph instead of compiling again for new cache addresses. One is kept at a time: a
    7B model's cache of 128 rows × 768 positions is 50 GB."""
    from transformers import StaticCache

    length = -(-length // CACHE_STEP) * CACHE_STEP
    kept = model.__dict__.get("_biomed_static_cache")
    if kept is None or kept[0] != (batch, length):
        model.__dict__.pop("_biomed_static_cache", None)  # freed before the next is made
        kept = model.__dict__["_biomed_static_cache"] = (
            (batch, length),
            StaticCache(config=model.config, max_cache_len=length),
        )
    return kept[1]


def _cache_kwarg(model) -> str:
    """`generate`'s name for a cache object: `cache` since transformers 5.2x, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def generate_batch(model, tok, texts: list[str], gen: GenerationConfig, max_length: int) -> list[str]:
    """Greedy continuation of each text; each output row decoded whole, special tokens skipped (main.py:167-183)."""
    ids = [tok(t, truncation=True, max_length=max_length)["input_ids"] for t in texts]
    return tok.batch_decode(generate_rows(model, ids, pad_id(tok), tok.eos_token_id, gen), skip_special_tokens=True)


def pad_id(tok) -> int:
    """The id a batch is padded with: the tokenizer's pad token, else EOS (both special: the decode skips them)."""
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def batches(lengths: list[int], gen: GenerationConfig, speed: GenerationSpeed) -> list[list[int]]:
    """Indices of the prompts per `generate` call: `generation.batch_size` in file order as released
    (main.py:156-159: `DataLoader(batch_size=4, shuffle=False)`), or `speed`'s batch size, longest first
    when sorting; with a static cache the last batch is filled up with its last index (one shape for all)."""
    size = speed.batch_size or gen.batch_size
    order = (
        sorted(range(len(lengths)), key=lambda i: -lengths[i]) if speed.sort_by_length else list(range(len(lengths)))
    )
    out = [order[i : i + size] for i in range(0, len(order), size)]
    if speed.static_cache and out and len(out[-1]) < size and len(order) > size:
        out[-1] = out[-1] + [out[-1][-1]] * (size - len(out[-1]))
    return out


def new_tokens(row: list[int], width: int, eos: int | None) -> int:
    """Tokens generated in one output row (prompt width `width`): up to and with the first EOS, else all."""
    new = row[width:]
    return new.index(eos) + 1 if eos is not None and eos in new else len(new)


def task_docs(cfg: EvalConfig, suite: str, task: str) -> list[dict[str, Any]]:
    """The prepared documents of a generation run (MedMCQA: the split `generation.medmcqa_split` names)."""
    split = UNLABELED_SPLIT if task == "medmcqa" and cfg.generation.medmcqa_split == "test" else "test"
    docs = read_jsonl(Path(cfg.output) / f"{task}.{split}.jsonl")
    return docs[: cfg.limit] if cfg.limit else docs


def score_docs(model, tok, docs: list[dict[str, Any]], suite: str, task: str, cfg: EvalConfig) -> list[dict[str, Any]]:
    """One sample record per document: prompt, raw output after the prompt, prediction, gold, exact_match, and the
    number of tokens generated. Batched as `eval.generation_speed` says (as released by default)."""
    gen, speed = cfg.generation, cfg.generation_speed
    pairs = [(instruct_example if suite == "instruct" else finetune_example)(d, tok.eos_token) for d in docs]
    inputs = [p + t if suite == "finetune" and gen.finetune_input == "prompt_and_target" else p for p, t in pairs]
    ids = [tok(t, truncation=True, max_length=cfg.max_length)["input_ids"] for t in inputs]
    plan = batches([len(x) for x in ids], gen, speed)
    # One cache per task, as long as its longest prompt needs: every batch of the task has one shape.
    cache = (
        static_cache(model, len(plan[0]), max(map(len, ids)) + gen.max_new_tokens)
        if plan and speed.static_cache
        else None
    )
    rows: list[list[int] | None] = [None] * len(docs)
    counts = [0] * len(docs)
    for chunk in plan:
        out = generate_rows(model, [ids[i] for i in chunk], pad_id(tok), tok.eos_token_id, gen, cache, speed.compile)
        width = max(len(ids[i]) for i in chunk)
        for i, row in zip(
            dict.fromkeys(chunk), out, strict=False
        ):  # a filled-up batch's copies (at its end) are dropped
            rows[i], counts[i] = row, new_tokens(row, width, tok.eos_token_id)
    decoded = tok.batch_decode(rows, skip_special_tokens=True)  # each whole row, pads skipped (main.py:182-183)
    samples = []
    for d, (prompt, target), text, n in zip(docs, pairs, decoded, counts, strict=True):
        raw = text[len(prompt) :]  # main.py:188
        want = gold(target, suite, task)
        samples.append(
            {
                "doc_id": d["idx"],
                "id": d["id"],
                "prompt": prompt,
                "target": target,
                "output": raw,
                "prediction": clean(raw),
                "gold": want,
                "exact_match": float(clean(raw) == want),
                "new_tokens": n,
            }
        )
    return samples


def run_generation(model, tok, cfg: EvalConfig, suite: str, task: str, task_key: str) -> dict[str, Any]:
    """Score one (suite, task): results shaped like lm-eval's (`results[task_key]["exact_match,none"]`, `samples`)."""
    t0 = time.perf_counter()
    samples = score_docs(model, tok, task_docs(cfg, suite, task), suite, task, cfg)
    acc = sum(s["exact_match"] for s in samples) / max(len(samples), 1)
    return {
        "results": {task_key: {"exact_match,none": acc, "n": len(samples)}},
        "config": {
            "method": "evaluation/main.py: greedy generation, exact match",
            "generation": json.loads(cfg.generation.model_dump_json()),
            "generation_speed": json.loads(cfg.generation_speed.model_dump_json()),
            "dtype": cfg.dtype,
        },
        "samples": {task_key: samples},
        "biomed_wall_s": time.perf_counter() - t0,
        "biomed_backend": "generate",
    }


def load_generator(cfg: EvalConfig, path: str, model=None):
    """(model, tokenizer) for generation: `model` if given (an lm-eval backend's), else loaded in `eval.dtype`;
    the tokenizer with its own defaults (BOS as it adds it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model is None:
        dtype = "auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
        # transformers wraps `PreTrainedModel.to` with functools.wraps, which typeshed types as an unbound call
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(cfg.device).eval()  # type: ignore[arg-type]
    return model, AutoTokenizer.from_pretrained(path)
