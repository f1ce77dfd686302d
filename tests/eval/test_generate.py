"""Issue 14, item 3: the instructed and fine-tuned rows are scored as the original's `evaluation/main.py` scored them.

The reference here is the released test loop itself, written out from `evaluation/main.py`,
`evaluation/mcqa_dataset.py`, `utils/data.py` (DataCollatorForSupervisedDataset) and
`modeling_utils.py` (smart_tokenizer_and_embedding_resize): templates typed out from the original,
a `[PAD]` token added and the embeddings resized, flip-pad-flip collation, `ne(pad)` attention
mask, `generate`, whole-row decode, `decoded[len(input_text):]`, strip, exact match. The package
(eval/generate.py) pads without touching the model; both must give the same output text per item.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from biomed_llama.errors import ConfigError
from biomed_llama.eval import generate
from biomed_llama.eval.config import GenerationConfig, GenerationSpeed
from biomed_llama.eval.prepare import prepare_eval
from biomed_llama.eval.task_utils import read_jsonl

MC = {"idx": 0, "id": "q0", "question": "Which drug lowers serum urate?", "context": "", "label": 1,
      "options": ["Aspirin", "Allopurinol", "Heparin", "Insulin"]}
DUP = {**MC, "options": ["Allopurinol", "Aspirin", "Heparin", "Allopurinol"], "label": 3}
YN = {"idx": 1, "id": "123", "question": "Does drug X reduce mortality?", "options": ["Yes", "No", "Maybe"],
      "label": 2, "context": "Background.\nResults."}


# ---- the original, written out ----

def original_source(doc, suite: str) -> str:
    """mcqa_dataset.py:106-119 (fine-tune), 271-288 and 319-336 (instruct)."""
    if suite == "finetune":
        opts = ["yes", "no", "maybe"] if doc["context"] else doc["options"]
        src = f"### Context: {doc['context']}\n" if doc["context"] else ""
        src += "### Question: " + doc["question"] + "\n"
        src += "### Options: " + " ".join(f"({chr(ord('A') + i)}) {o}" for i, o in enumerate(opts)) + "\n"
        return src + "### Answer:"
    if doc["context"]:
        return ("The following is a medical question paired with an abstract from PubMed. "
                "Please answer Yes / No / Maybe to the question given the scientific evidence as the final answer.\n\n"
                f"### Abstract: {doc['context']}\n\n### Question: {doc['question']}\n\n### Answer:")
    options = "\n".join(f"({i}) {o}" for i, o in zip("ABCD", doc["options"]))
    return ("The following is a multiple-choice question (with options) about medical knowledge. "
            "Please select the most appropriate one from the following answer candidates as the final answer.\n\n"
            f"### Question: {doc['question']}\n\n### Options:\n{options}\n\n### Answer:(")


def original_target(doc, suite: str, eos: str) -> str:
    """mcqa_dataset.py:21-23 (answer_idx), 121 (fine-tune) and 227 (instruct); PubMedQA options yes/no/maybe (75)."""
    options = ["yes", "no", "maybe"] if doc["context"] else doc["options"]
    answer = options[doc["label"]]
    if suite == "finetune":
        return f" {answer}{eos}"
    return f"({'ABCDE'[options.index(answer)]}) {answer}{eos}"


def original_match(output_text: str, target_text: str, dataset_name: str) -> bool:
    """main.py:188-201 after the slice."""
    if target_text.endswith('</s>'):
        target_text = target_text[:-4]
    output_text = output_text.lstrip('( ').strip(' )')
    target_text = target_text.lstrip('( ').strip(' )')
    if dataset_name in ['instruct-pubmedqa']:
        target_text = target_text.split(' ')[1]
        target_text = target_text.capitalize()
    return output_text == target_text


@torch.no_grad()
def original_outputs(path: str, docs, suite: str, released_input: bool, max_new_tokens: int) -> list[str]:
    """main.py:90-188 with batch 4: the text after `len(input_text)` of each decoded output row."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, model_max_length=2048, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    n_new = tokenizer.add_special_tokens({"pad_token": "[PAD]", "bos_token": "<s>", "eos_token": "</s>",
                                         "unk_token": "<unk>"})
    model.resize_token_embeddings(len(tokenizer))
    if n_new > 0:
        for emb in (model.get_input_embeddings().weight.data, model.get_output_embeddings().weight.data):
            emb[-n_new:] = emb[:-n_new].mean(dim=0, keepdim=True)
    outs = []
    for start in range(0, len(docs), 4):
        items = []
        for doc in docs[start:start + 4]:
            source, target = original_source(doc, suite), original_target(doc, suite, tokenizer.eos_token)
            texts = [source + target, source] if (suite == "finetune" and released_input) else [source, target]
            ids = tokenizer(texts, padding=False, max_length=2048, truncation=True)["input_ids"][0]
            items.append((torch.tensor(ids), source))
        flipped = [torch.flip(i, dims=[-1]) for i, _ in items]  # utils/data.py:168-173
        input_ids = torch.flip(torch.nn.utils.rnn.pad_sequence(flipped, batch_first=True,
                                                               padding_value=tokenizer.pad_token_id), dims=[-1])
        out = model.generate(input_ids=input_ids, attention_mask=input_ids.ne(tokenizer.pad_token_id),
                             max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id, return_dict_in_generate=True)
        raw = tokenizer.batch_decode(out.sequences.tolist(), skip_special_tokens=True)
        outs += [text[len(src):] for text, (_, src) in zip(raw, items)]
    return outs


# ---- the tests ----

def test_targets_and_golds_are_main_pys():
    for doc in (MC, DUP, YN):
        for suite in ("instruct", "finetune"):
            maker = generate.instruct_example if suite == "instruct" else generate.finetune_example
            prompt, target = maker(doc, "</s>")
            assert prompt == original_source(doc, suite)
            assert target == original_target(doc, suite, "</s>")
            name = {"instruct": "instruct-", "finetune": ""}[suite] + ("pubmedqa" if doc["context"] else "medqa")
            task = "pubmedqa" if doc["context"] else "medqa4"
            for out in ("", " B) Allopurinol", "B) Allopurinol", "(B) Allopurinol )", "Maybe", " maybe</s>",
                        " Allopurinol", "allopurinol", "D) Allopurinol", "A) Allopurinol"):
                got = generate.clean(out) == generate.gold(target, suite, task)
                assert got == original_match(out, target, name), (suite, doc["id"], out)
    assert generate.instruct_example(DUP, "</s>")[1] == "(A) Allopurinol</s>"  # the first equal option's letter


@pytest.mark.parametrize("suite,task,released", [("instruct", "medqa4", False), ("instruct", "pubmedqa", False),
                                                 ("finetune", "medqa4", False), ("finetune", "pubmedqa", True)])
def test_generation_equals_the_released_loop(prepared, any_model, suite, task, released):
    """Same decoded output for every item (both tokenizers: BOS added only by the SentencePiece one)."""
    cfg = prepared.model_copy(update={"max_length": 2048, "generation": GenerationConfig(
        max_new_tokens=6, finetune_input="prompt_and_target" if released else "prompt")})
    docs = read_jsonl(Path(cfg.output) / f"{task}.test.jsonl")[:10]  # 10 items: batches of 4, 4, 2
    model, tok = generate.load_generator(cfg.model_copy(update={"dtype": "float32", "device": "cpu"}), str(any_model))
    ours = generate.score_docs(model, tok, docs, suite, task, cfg)
    want = original_outputs(str(any_model), docs, suite, released, 6)
    assert [s["output"] for s in ours] == want
    name = {"instruct": "instruct-", "finetune": ""}[suite] + task
    assert [s["exact_match"] for s in ours] == [float(original_match(o, s["target"], name)) for o, s in zip(want, ours)]
    assert any(s["output"].strip() for s in ours)  # the slice left text: the tiny model generated something


def test_released_finetune_input_scores_the_leaked_answer(prepared, eval_root):
    """As released, a model that stops at once scores 100%: its input already holds the gold answer."""
    cfg = prepared.model_copy(update={"max_length": 2048, "generation": GenerationConfig(max_new_tokens=4)})
    model, tok = generate.load_generator(cfg, str(eval_root / "model"))
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.zero_()[tok.eos_token_id] = 1.0  # always EOS
    model.lm_head = head
    docs = read_jsonl(Path(cfg.output) / "medqa4.test.jsonl")[:6]
    released = cfg.model_copy(update={"generation": GenerationConfig(finetune_input="prompt_and_target")})
    assert [s["exact_match"] for s in generate.score_docs(model, tok, docs, "finetune", "medqa4", released)] == [1.0] * 6
    assert [s["exact_match"] for s in generate.score_docs(model, tok, docs, "finetune", "medqa4", cfg)] == [0.0] * 6


def test_left_padding_does_not_change_a_prompts_output(prepared, eval_root):
    """Greedy outputs of a padded batch equal one-prompt-at-a-time outputs (pads masked, positions right)."""
    cfg = prepared.model_copy(update={"max_length": 2048, "generation": GenerationConfig(max_new_tokens=5)})
    model, tok = generate.load_generator(cfg, str(eval_root / "model"))
    docs = read_jsonl(Path(cfg.output) / "medmcqa.test.jsonl")[:5]
    batched = generate.score_docs(model, tok, docs, "instruct", "medmcqa", cfg)
    single = generate.score_docs(model, tok, docs, "instruct", "medmcqa",
                                 cfg.model_copy(update={"generation": GenerationConfig(max_new_tokens=5, batch_size=1)}))
    assert len({len(tok(s["prompt"])["input_ids"]) for s in batched}) > 1  # the batch really was padded
    assert [s["output"] for s in batched] == [s["output"] for s in single]


def test_medmcqa_test_split_has_the_released_targets(prepared, tmp_path):
    """`generation.medmcqa_split: test` reads the unlabeled test file; every target is option D (HF's cop = -1)."""
    records = [{"id": "t1", "question": "Q1?", "opa": "a", "opb": "b", "opc": "c", "opd": "d", "cop": -1},
               {"id": "t2", "question": "Q2?", "opa": "x", "opb": "y", "opc": "z", "opd": "x"},
               {"id": "t3", "question": "Q3?", "opa": "p", "opb": "q", "opc": "r", "opd": "s", "cop": 2}]
    test_file = tmp_path / "test.json"
    test_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    models = {"ft": prepared.models["tiny"].model_copy(update={"suites": ["finetune"], "tasks": ["medmcqa"]})}
    cfg = prepared.model_copy(update={"output": str(tmp_path / "eval"), "models": models,
                                      "generation": GenerationConfig(medmcqa_split="test")})
    with pytest.raises(ConfigError, match="eval.benchmarks.medmcqa_test"):
        prepare_eval(cfg)
    cfg = cfg.model_copy(update={"benchmarks": cfg.benchmarks.model_copy(update={"medmcqa_test": str(test_file)})})
    prepare_eval(cfg)
    docs = generate.task_docs(cfg, "finetune", "medmcqa")
    assert [d["id"] for d in docs] == ["t1", "t2", "t3"]
    assert [d["label"] for d in docs] == [3, 0, 3]  # options[-1], lettered by its first occurrence
    assert generate.task_docs(cfg.model_copy(update={"generation": GenerationConfig()}), "finetune", "medmcqa") == \
        read_jsonl(Path(cfg.output) / "medmcqa.test.jsonl")


# ---- eval.generation_speed: the labelled fast setting ----

def test_batches_are_file_order_by_default_and_sorted_filled_when_fast():
    lengths = [5, 9, 7, 9, 3, 8, 6]
    assert generate.batches(lengths, GenerationConfig(), GenerationSpeed()) == [[0, 1, 2, 3], [4, 5, 6]]  # main.py:158
    fast = GenerationSpeed(batch_size=3, sort_by_length=True, static_cache=True)
    plan = generate.batches(lengths, GenerationConfig(), fast)
    assert plan == [[1, 3, 5], [2, 6, 0], [4, 4, 4]]  # longest first (stable), last batch filled with its last index
    assert sorted(dict.fromkeys(i for b in plan for i in b)) == list(range(7))
    assert generate.batches([4, 2], GenerationConfig(), fast) == [[0, 1]]  # one short batch: nothing to fill
    with pytest.raises(ValueError, match="static_cache"):
        GenerationSpeed(compile=True)


@pytest.mark.parametrize("suite,task", [("instruct", "medqa4"), ("finetune", "medmcqa"), ("instruct", "pubmedqa")])
def test_fast_generation_gives_the_released_loops_outputs_in_float32(prepared, eval_root, suite, task):
    """Batch 7, longest first, static KV cache (reused across batches, last batch filled up) against batch 4 in
    file order with a growing cache: every output and score identical. In float32 a prompt's row does not depend
    on its batch mates (pads are masked out of attention and positions count real tokens only); compile is the
    GPU bench's (bench/bench_generate.py), where bf16 may round otherwise."""
    cfg = prepared.model_copy(update={"max_length": 2048, "generation": GenerationConfig(max_new_tokens=12)})
    model, tok = generate.load_generator(cfg, str(eval_root / "model"))
    docs = generate.task_docs(cfg, suite, task)[:30]
    faithful = generate.score_docs(model, tok, docs, suite, task, cfg)
    fast_cfg = cfg.model_copy(update={"generation_speed": GenerationSpeed(batch_size=7, sort_by_length=True,
                                                                            static_cache=True)})
    fast = generate.score_docs(model, tok, docs, suite, task, fast_cfg)
    (shape, _), = [model.__dict__["_biomed_static_cache"]]
    assert shape[0] == 7 and shape[1] % generate.CACHE_STEP == 0  # the static cache really ran
    lengths = [len(tok(s["prompt"])["input_ids"]) for s in faithful]
    assert len(set(lengths)) > 1 and lengths != sorted(lengths, reverse=True)  # other batches, other padding
    assert [s["output"] for s in fast] == [s["output"] for s in faithful]
    assert [(s["exact_match"], s["new_tokens"]) for s in fast] == [(s["exact_match"], s["new_tokens"]) for s in faithful]
    assert sum(s["new_tokens"] for s in faithful) > len(docs)  # more than an EOS each: there was text to compare


def test_new_tokens_counts_up_to_the_first_eos():
    assert generate.new_tokens([0, 0, 5, 6, 7, 2, 3, 3], width=4, eos=2) == 2  # 7 and EOS
    assert generate.new_tokens([5, 6, 7, 8], width=2, eos=2) == 2
    assert generate.new_tokens([5, 6, 2], width=3, eos=2) == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_static_generation_gives_the_same_outputs_on_the_gpu(prepared, eval_root):
    """The whole fast setting (compile included) in float32 on a GPU: the same outputs as the released loop."""
    cfg = prepared.model_copy(update={"max_length": 2048, "device": "cuda",
                                      "generation": GenerationConfig(max_new_tokens=12)})
    model, tok = generate.load_generator(cfg, str(eval_root / "model"))
    docs = generate.task_docs(cfg, "instruct", "medmcqa")[:24]
    faithful = generate.score_docs(model, tok, docs, "instruct", "medmcqa", cfg)
    fast = generate.score_docs(model, tok, docs, "instruct", "medmcqa", cfg.model_copy(update={
        "generation_speed": GenerationSpeed(batch_size=8, sort_by_length=True, static_cache=True, compile=True)}))
    assert [s["output"] for s in fast] == [s["output"] for s in faithful]
