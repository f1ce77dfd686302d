#!/usr/bin/env python3
"""Generate the demo's benchmark fixtures in the formats the real benchmarks are published in.

Writes `data/sample/eval/` (tens of items each, generated text, nothing copied from a benchmark):
- `medqa/US/4_options/phrases_no_exclude_{test,train}.jsonl`: MedQA (US) 4-option JSON lines
  `{"question", "answer", "options": {"A".."D"}, "meta_info", "answer_idx", "metamap_phrases"}`;
- `medqa/US/{test,train}.jsonl`: 5-option JSON lines (options A..E, no `metamap_phrases`);
- `medmcqa/{dev,train}.json`: MedMCQA JSON lines (`opa`..`opd`, `cop` 1–4 as in the original release);
- `pubmedqa/ori_pqal.json`: PubMedQA labeled set, one object keyed by PMID.
Contaminated on purpose (`CONTAMINATED`): a few test items quote a span of a document of the demo's Pile
train split (data/sample/pile/train, made by scripts/make_sample.py), as a real PubMedQA context is a PubMed
abstract, so the `contamination` stage and the table's clean-subset cells have something to find: some
quotes verbatim, some upper-cased or with punctuation and whitespace changed (lm-eval's normalisation
undoes both), and one of 12 words per task (fewer than 13: not contaminated). Only the quoting items' question
(PubMedQA: contexts) changes; every other byte is what the seeded draw gives.
Deterministic (seeded): `python scripts/make_eval_fixtures.py --check` verifies the committed copy.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data/sample/eval"
PILE_TRAIN = ROOT / "data/sample/pile/train"
# Per test file: (item position, train document number, first word, words, variant) of each quoting item. The
# documents are the train split's PubMed records in file order (PubMedQA's: its PubMed Abstracts records only); `verbatim`, `upper` (upper-cased) and `punct`
# (punctuation and line breaks added) are found, a quote of 12 words (< n = 13) is not.
CONTAMINATED = {
    "medqa/US/4_options/phrases_no_exclude_test.jsonl": [(2, 7, 20, 20, "verbatim"), (9, 31, 12, 16, "upper"),
                                                         (17, 60, 25, 18, "punct"), (25, 140, 8, 22, "verbatim"),
                                                         (33, 95, 10, 12, "verbatim")],
    "medqa/US/test.jsonl": [(4, 15, 30, 20, "verbatim"), (13, 77, 9, 18, "punct"), (38, 150, 14, 12, "upper")],
    "medmcqa/dev.json": [(6, 22, 5, 16, "verbatim"), (18, 101, 11, 15, "upper"), (30, 170, 16, 12, "verbatim")],
    "pubmedqa/ori_pqal.json": [(1, 3, 0, 30, "verbatim"), (8, 40, 0, 26, "upper"), (15, 88, 0, 28, "punct"),
                               (22, 120, 0, 24, "verbatim"), (27, 170, 6, 12, "verbatim")],
}

AGES = ["23-year-old", "35-year-old", "47-year-old", "58-year-old", "64-year-old", "71-year-old"]
PEOPLE = ["man", "woman"]
SYMPTOMS = ["fever", "fatigue", "chest pain", "shortness of breath", "joint pain", "headache",
            "abdominal pain", "weight loss", "night sweats", "palpitations", "rash", "cough"]
DURATIONS = ["2 days", "1 week", "3 weeks", "2 months", "6 months"]
FINDINGS = ["an elevated serum creatinine", "a low hemoglobin", "an irregular pulse",
            "bilateral crackles", "a palpable spleen", "an elevated troponin", "hyponatremia"]
DRUGS = ["metformin", "lisinopril", "amoxicillin", "warfarin", "prednisone", "furosemide",
         "atorvastatin", "levothyroxine", "omeprazole", "ceftriaxone", "heparin", "insulin",
         "doxycycline", "propranolol", "amiodarone", "allopurinol"]
DIAGNOSES = ["sarcoidosis", "hypothyroidism", "infective endocarditis", "iron deficiency anemia",
             "pulmonary embolism", "rheumatoid arthritis", "nephrotic syndrome", "tuberculosis",
             "atrial fibrillation", "heart failure", "gout", "lupus nephritis"]
QUESTIONS = ["Which of the following is the most likely diagnosis?",
             "Which of the following is the most appropriate next step in management?",
             "Which of the following drugs is most likely to help this patient?"]
SUBJECTS = ["Medicine", "Pharmacology", "Physiology", "Pathology", "Microbiology", "Anatomy"]
TOPICS = ["Cardiology", "Nephrology", "Endocrinology", "Infections", "Hematology"]
STEMS = ["Drug of choice for {x} is", "Most common cause of {x} is", "{x} is associated with",
         "First-line investigation in {x} is", "Characteristic finding in {x} is"]
OUTCOMES = ["mortality", "readmission", "length of stay", "pain scores", "functional recovery"]
COHORTS = ["elderly patients", "children", "adults with diabetes", "pregnant women", "smokers"]


def _vignette(rnd: random.Random) -> str:
    return (f"A {rnd.choice(AGES)} {rnd.choice(PEOPLE)} presents with {rnd.choice(SYMPTOMS)} and "
            f"{rnd.choice(SYMPTOMS)} for {rnd.choice(DURATIONS)}. Examination shows "
            f"{rnd.choice(FINDINGS)}. {rnd.choice(QUESTIONS)}")


def medqa(rnd: random.Random, n: int, n_options: int) -> list[dict]:
    """MedQA (US) records with `n_options` options."""
    letters = "ABCDE"[:n_options]
    out = []
    for _ in range(n):
        pool = rnd.choice([DRUGS, DIAGNOSES])
        options = rnd.sample(pool, n_options)
        gold = rnd.randrange(n_options)
        rec = {"question": _vignette(rnd), "answer": options[gold],
               "options": {k: v for k, v in zip(letters, options)},
               "meta_info": rnd.choice(["step1", "step2&3"]), "answer_idx": letters[gold]}
        if n_options == 4:
            rec["metamap_phrases"] = rec["question"].rstrip("?").split(". ")
        out.append(rec)
    return out


def medmcqa(rnd: random.Random, n: int, start_id: int) -> list[dict]:
    """MedMCQA records (`cop` 1–4, the original release's convention)."""
    out = []
    for i in range(n):
        pool = rnd.choice([DRUGS, DIAGNOSES])
        opts = rnd.sample(pool, 4)
        out.append({"id": f"{start_id + i:08x}-synthetic",
                    "question": rnd.choice(STEMS).format(x=rnd.choice(DIAGNOSES)),
                    "opa": opts[0], "opb": opts[1], "opc": opts[2], "opd": opts[3],
                    "cop": rnd.randint(1, 4), "choice_type": "single",
                    "exp": f"Generated explanation {i}.", "subject_name": rnd.choice(SUBJECTS),
                    "topic_name": rnd.choice(TOPICS)})
    return out


def pubmedqa(rnd: random.Random, n: int) -> dict:
    """PubMedQA `ori_pqal.json`: an object keyed by PMID."""
    out = {}
    for i in range(n):
        drug, cohort, outcome = rnd.choice(DRUGS), rnd.choice(COHORTS), rnd.choice(OUTCOMES)
        decision = rnd.choice(["yes", "yes", "no", "maybe"])
        contexts = [f"We studied {rnd.randint(40, 900)} {cohort} treated with {drug}.",
                    f"The primary outcome was {outcome} at {rnd.choice(DURATIONS)}.",
                    f"Treatment was associated with a {rnd.choice(['lower', 'higher', 'similar'])} "
                    f"rate of {outcome} (p={rnd.choice(['0.01', '0.04', '0.32'])})."]
        out[str(30000000 + 137 * i)] = {
            "QUESTION": f"Does {drug} change {outcome} in {cohort}?",
            "CONTEXTS": contexts, "LABELS": ["BACKGROUND", "METHODS", "RESULTS"],
            "MESHES": ["Humans", drug.capitalize()], "YEAR": str(rnd.randint(1995, 2018)),
            "reasoning_required_pred": decision, "reasoning_free_pred": decision,
            "final_decision": decision,
            "LONG_ANSWER": f"In {cohort}, {drug} {'changes' if decision == 'yes' else 'may not change'} {outcome}."}
    return out


def train_documents(prefix: str = "PubMed") -> list[str]:
    """The texts of the demo's Pile train split's records of the subsets named `prefix…`, in file order (malformed
    lines skipped)."""
    import zstandard

    texts = []
    for path in sorted(PILE_TRAIN.glob("*.jsonl.zst")):
        with path.open("rb") as f:
            lines = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8").read().splitlines()
        for line in lines:
            try:
                rec = json.loads(line)
                if rec["text"] and rec["meta"]["pile_set_name"].startswith(prefix):
                    texts.append(rec["text"])
            except (ValueError, KeyError, TypeError):
                continue
    return texts


def quote(doc: str, first: int, words: int, variant: str) -> str:
    """`words` words of `doc` from word `first`, verbatim, upper-cased, or with punctuation and line breaks added."""
    span = doc.split()[first:first + words]
    if variant == "upper":
        return " ".join(span).upper()
    if variant == "punct":
        return " ".join(w + (",\n" if i % 4 == 3 else "") + ("  " if i % 5 == 4 else "")
                        for i, w in enumerate(span)).replace(" ", " (", 1) + ")!"
    return " ".join(span)


def contaminate(rel: str, records: list[dict] | dict, docs: list[str]) -> None:
    """Make the `CONTAMINATED` items of one test file quote their train documents (in place)."""
    for pos, doc, first, words, variant in CONTAMINATED.get(rel, []):
        text = quote(docs[doc], first, words, variant)
        if isinstance(records, dict):  # PubMedQA: the quote is the abstract, one context per line
            rec = list(records.values())[pos]
            rec["CONTEXTS"] = [text]
            rec["LABELS"] = ["BACKGROUND"]
            continue
        rec = records[pos]
        rec["question"] = f"{text} {rec['question'].split('. ')[-1]}"
        if "metamap_phrases" in rec:
            rec["metamap_phrases"] = rec["question"].rstrip("?").split(". ")


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def build() -> dict[str, str]:
    """Return {relative path: file text} of every fixture (deterministic)."""
    rnd = random.Random(20230601)
    records = {
        "medqa/US/4_options/phrases_no_exclude_test.jsonl": medqa(rnd, 40, 4),
        "medqa/US/4_options/phrases_no_exclude_train.jsonl": medqa(rnd, 24, 4),
        "medqa/US/test.jsonl": medqa(rnd, 40, 5),
        "medqa/US/train.jsonl": medqa(rnd, 24, 5),
        "medmcqa/dev.json": medmcqa(rnd, 40, 0),
        "medmcqa/train.json": medmcqa(rnd, 30, 1000),
        "pubmedqa/ori_pqal.json": pubmedqa(rnd, 30),
    }
    docs, abstracts = train_documents(), train_documents("PubMed Abstracts")
    for rel, recs in records.items():
        contaminate(rel, recs, abstracts if rel.startswith("pubmedqa/") else docs)
    return {rel: json.dumps(recs, indent=1) + "\n" if isinstance(recs, dict) else _jsonl(recs)
            for rel, recs in records.items()}


def main() -> int:
    """Write the fixtures (or, with --check, compare them with the committed copy)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if the committed files differ")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    bad = 0
    for rel, text in build().items():
        path = args.out / rel
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                print(f"differs: {path}")
                bad += 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
