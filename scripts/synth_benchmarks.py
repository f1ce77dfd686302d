"""Synthetic benchmark files in their published formats at the real sizes (shared by bench/bench_eval.py
and scripts/make_gpu_inputs.py; text invented from word lists, nothing copied).

`write_benchmarks` writes MedQA-USMLE 4 and 5 options (JSON lines), MedMCQA (JSON lines, cop 1-4) and
PubMedQA `ori_pqal.json` (one object keyed by PMID), with lengths set in tokens of a given tokenizer as
LLaMA's tokenizer sees the real sets; optionally the train files the few-shot pools come from.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("patient patients treatment therapy clinical study trial cohort risk disease cell cells protein "
         "expression gene mutation receptor inflammation infection antibiotic dose serum plasma level "
         "increased decreased significant analysis outcome mortality survival tumor cancer chronic acute "
         "syndrome diagnosis imaging biopsy renal hepatic cardiac pulmonary vascular neural immune "
         "response pathway signaling mechanism model mice human in vitro in vivo baseline follow-up "
         "months years median mean ratio interval confidence associated compared control group").split()
DRUGS = ["metformin", "lisinopril", "amoxicillin", "warfarin", "prednisone", "furosemide", "atorvastatin",
         "levothyroxine", "omeprazole", "ceftriaxone", "heparin", "insulin", "doxycycline", "propranolol"]
DIAGNOSES = ["sarcoidosis", "hypothyroidism", "infective endocarditis", "iron deficiency anemia",
             "pulmonary embolism", "rheumatoid arthritis", "nephrotic syndrome", "tuberculosis",
             "atrial fibrillation", "congestive heart failure", "gout", "lupus nephritis", "sepsis"]

def sentence(rnd: random.Random, lo: int, hi: int) -> str:
    """A pseudo-biomedical sentence of lo..hi words."""
    words = [rnd.choice(WORDS) for _ in range(rnd.randint(lo, hi))]
    return " ".join(words).capitalize() + "."


def text_of(rnd: random.Random, n_words: int) -> str:
    """Sentences until about n_words words."""
    out, n = [], 0
    while n < n_words:
        s = sentence(rnd, 8, 24)
        out.append(s)
        n += s.count(" ") + 1
    return " ".join(out)


def text_tokens(rnd: random.Random, n_tokens: int, tok) -> str:
    """Sentences until about n_tokens tokens of `tok` (lengths are set in tokens: the demo tokenizer
    splits words ~1.8x finer than LLaMA's, so word counts would overstate the work)."""
    out, n = [], 0
    while n < n_tokens:
        s = sentence(rnd, 4, 10)  # short sentences: the last one overshoots the target by little
        out.append(s)
        n += len(tok.encode(" " + s, add_special_tokens=False))
    return " ".join(out)


def option(rnd: random.Random) -> str:
    """An answer option of 1-3 words (real options are mostly short noun phrases)."""
    if rnd.random() < 0.5:
        return rnd.choice(DRUGS + DIAGNOSES)
    return " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(1, 3)))


def medqa_record(rnd: random.Random, n_opt: int, tok) -> dict:
    """One MedQA (US) record with `n_opt` options: a vignette of 90-240 tokens (mean ~165)."""
    letters = "ABCDE"[:n_opt]
    opts = [option(rnd) for _ in letters]
    gold = rnd.randrange(n_opt)
    q = f"A {rnd.randint(18, 90)}-year-old presents. " + text_tokens(rnd, rnd.randint(90, 240), tok) + \
        " Which of the following is the most likely diagnosis?"
    return {"question": q, "answer": opts[gold], "options": dict(zip(letters, opts)), "meta_info": "step1",
            "answer_idx": letters[gold]}


def medmcqa_record(rnd: random.Random, i: int, tok) -> dict:
    """One MedMCQA record (the release's format, cop 1-4): a question of 8-35 tokens."""
    o = [option(rnd) for _ in range(4)]
    return {"id": f"bench-{i}", "question": text_tokens(rnd, rnd.randint(8, 35), tok), "opa": o[0], "opb": o[1],
            "opc": o[2], "opd": o[3], "cop": rnd.randint(1, 4), "choice_type": "single", "exp": "",
            "subject_name": "Medicine", "topic_name": "Bench"}


def pubmedqa_record(rnd: random.Random, tok) -> dict:
    """One labelled PubMedQA item: an abstract of 220-420 tokens over 3-4 contexts, yes / no / maybe."""
    n_ctx = rnd.randint(3, 4)
    ctx = [text_tokens(rnd, rnd.randint(220, 420) // n_ctx, tok) for _ in range(n_ctx)]
    d = rnd.choice(["yes", "no", "maybe"])
    return {"QUESTION": sentence(rnd, 8, 18)[:-1] + "?", "CONTEXTS": ctx, "LABELS": ["BACKGROUND"] * len(ctx),
            "MESHES": [], "YEAR": "2010", "reasoning_required_pred": d, "reasoning_free_pred": d,
            "final_decision": d, "LONG_ANSWER": sentence(rnd, 10, 30)}


# Where each file lies under the root, as the downloads lay them out (paper.yaml's eval.benchmarks).
PATHS = {"medqa4": "medqa/US/4_options/phrases_no_exclude_test.jsonl", "medqa5": "medqa/US/test.jsonl",
         "medmcqa": "medmcqa/dev.json", "pubmedqa": "pubmedqa/ori_pqal.json",
         "medqa4_train": "medqa/US/4_options/phrases_no_exclude_train.jsonl", "medqa5_train": "medqa/US/train.jsonl",
         "medmcqa_train": "medmcqa/train.json"}


def _jsonl(path: Path, rows) -> None:
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def write_benchmarks(root: Path, sizes: dict[str, int], rnd: random.Random, tok) -> dict[str, str]:
    """Write the benchmark files in their published formats under `root`; return {key: path}.

    `sizes` has the test sets' item counts (`medqa4`, `medqa5`, `medmcqa`, `pubmedqa`) and, optionally,
    the train files' (`medqa4_train`, `medqa5_train`, `medmcqa_train`; written after the test sets, so
    asking for them leaves the test files unchanged). Lengths in tokens of `tok`, as LLaMA's tokenizer
    sees the real sets: MedQA vignettes 90-240 (mean ~165), MedMCQA questions 8-35, PubMedQA abstracts
    220-420 over 3-4 contexts."""
    paths = {k: root / p for k, p in PATHS.items() if k in sizes}
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    for key, n_opt in (("medqa4", 4), ("medqa5", 5)):
        _jsonl(paths[key], (medqa_record(rnd, n_opt, tok) for _ in range(sizes[key])))
    _jsonl(paths["medmcqa"], (medmcqa_record(rnd, i, tok) for i in range(sizes["medmcqa"])))
    pqa = {str(20000000 + i): pubmedqa_record(rnd, tok) for i in range(sizes["pubmedqa"])}
    paths["pubmedqa"].write_text(json.dumps(pqa))
    for key, n_opt in (("medqa4_train", 4), ("medqa5_train", 5)):
        if key in sizes:
            _jsonl(paths[key], (medqa_record(rnd, n_opt, tok) for _ in range(sizes[key])))
    if "medmcqa_train" in sizes:
        _jsonl(paths["medmcqa_train"], (medmcqa_record(rnd, i, tok) for i in range(sizes["medmcqa_train"])))
    return {k: str(v) for k, v in paths.items()}
