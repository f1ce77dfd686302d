#!/usr/bin/env python3
"""Generate the demo instruction sources under data/sample/instruct/ in their published formats.

All text is synthesised here from small word lists (no benchmark or dataset text is copied), with a
fixed seed, so the fixtures are reproducible: `python scripts/make_instruct_fixtures.py` rewrites
them byte for byte. Formats follow the published releases:

- medqa/train_4opt.jsonl, train_5opt.jsonl: MedQA (US) JSON lines {question, answer, options,
  meta_info, answer_idx} (+ metamap_phrases in the 4-option file).
- medmcqa/train_cop1.jsonl (original release, cop 1–4), train_cop0.jsonl (HF copy, cop 0–3).
- pubmedqa/ori_pqal.json (labeled, yes/no/maybe), ori_pqaa.json (artificial, yes/no): one object
  keyed by PMID.
- alpaca/alpaca_data_cleaned.json, visual-med-alpaca/med_alpaca_data.json: JSON lists of
  {instruction, input, output}.
- examples/*.json: the package's small exemplar format for medpalm / CoT sets;
  examples/released/: one file per sub-source of the released code's 20-source mixture.
- bad/: files with one bad record of every kind the readers must report (tests only).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

SEED = 20230601
LETTERS = "ABCDE"

AGES = list(range(19, 81))
PEOPLE = ["man", "woman", "boy", "girl", "patient", "farmer", "teacher", "runner"]
SYMPTOMS = ["fever", "cough", "fatigue", "chest pain", "headache", "rash", "joint pain", "dyspnea",
            "abdominal pain", "weight loss", "night sweats", "palpitations", "dizziness", "nausea"]
DURATIONS = ["two days", "a week", "three weeks", "two months", "six months"]
FINDINGS = ["tachycardia", "a systolic murmur", "pallor", "jaundice", "hepatomegaly", "edema",
            "crackles at both bases", "a tender abdomen", "a goitre", "lymphadenopathy"]
DRUGS = ["aspirin", "metformin", "lisinopril", "amoxicillin", "heparin", "furosemide", "prednisone",
         "atorvastatin", "omeprazole", "levothyroxine", "insulin", "doxycycline", "warfarin", "albuterol"]
DIAGNOSES = ["pneumonia", "anemia", "hypothyroidism", "heart failure", "gout", "asthma", "hepatitis",
             "diabetes mellitus", "pulmonary embolism", "sarcoidosis", "endocarditis", "cholecystitis"]
TESTS = ["a chest radiograph", "an echocardiogram", "a complete blood count", "a liver panel",
         "a thyroid panel", "an electrocardiogram", "a urinalysis", "a CT scan of the abdomen"]
SUBJECTS = ["Medicine", "Pharmacology", "Physiology", "Pathology", "Anatomy", "Microbiology"]
ORGANS = ["liver", "kidney", "heart", "lung", "thyroid", "spleen", "pancreas", "brain"]
EXPOSURES = ["statin use", "regular exercise", "smoking", "night shift work", "a low salt diet",
             "vitamin D supplements", "early mobilisation", "telephone follow-up"]
OUTCOMES = ["mortality", "readmission", "infection", "blood pressure", "fracture risk", "recovery time"]
VERBS = ["Explain", "Summarise", "Describe", "List", "Give", "Suggest"]
TOPICS = ["the role of the {o}", "how {d} is diagnosed", "side effects of {g}", "ways to prevent {d}",
          "the function of the {o}", "what {t} measures"]


def _sentence(r: random.Random) -> str:
    return (f"A {r.choice(AGES)}-year-old {r.choice(PEOPLE)} presents with {r.choice(SYMPTOMS)} and "
            f"{r.choice(SYMPTOMS)} for {r.choice(DURATIONS)}. Examination shows {r.choice(FINDINGS)}.")


def _options(r: random.Random, n: int, pool: list[str]) -> list[str]:
    return r.sample(pool, n)


def medqa(r: random.Random, n: int, n_opt: int) -> list[dict[str, Any]]:
    """MedQA (US) records with `n_opt` options."""
    out = []
    for _ in range(n):
        pool, ask = r.choice([(DRUGS, "Which drug is the most appropriate treatment?"),
                              (DIAGNOSES, "What is the most likely diagnosis?"),
                              (TESTS, "Which is the best next step in evaluation?")])
        opts = _options(r, n_opt, pool)
        idx = r.randrange(n_opt)
        rec = {"question": f"{_sentence(r)} {ask}", "answer": opts[idx],
               "options": {LETTERS[i]: o for i, o in enumerate(opts)}, "meta_info": r.choice(["step1", "step2&3"]),
               "answer_idx": LETTERS[idx]}
        if n_opt == 4:
            rec["metamap_phrases"] = rec["question"].rstrip("?.").split(" ")[:6]
        out.append(rec)
    return out


def medmcqa(r: random.Random, n: int, base: int) -> list[dict[str, Any]]:
    """MedMCQA records; `cop` counts from `base` (1 original release, 0 HF copy); both ends occur."""
    out = []
    for i in range(n):
        organ, opts = r.choice(ORGANS), _options(r, 4, DRUGS + DIAGNOSES)
        cop = base + (i % 4 if i < 4 else r.randrange(4))  # the first four cover every value
        out.append({"id": f"{r.getrandbits(64):016x}", "question": f"Which of the following most often affects the {organ}?",
                    "opa": opts[0], "opb": opts[1], "opc": opts[2], "opd": opts[3], "cop": cop,
                    "choice_type": "single", "exp": f"The {organ} is involved because of {opts[cop - base]}.",
                    "subject_name": r.choice(SUBJECTS), "topic_name": None})
    return out


def pubmedqa(r: random.Random, n: int, decisions: tuple[str, ...], start_pmid: int) -> dict[str, Any]:
    """PubMedQA objects keyed by PMID."""
    out = {}
    for i in range(n):
        exp, outcome = r.choice(EXPOSURES), r.choice(OUTCOMES)
        ctx = [f"We studied whether {exp} changes {outcome} in adults with {r.choice(DIAGNOSES)}.",
               f"A cohort of {r.randint(40, 900)} patients was followed for {r.choice(DURATIONS)}.",
               f"The {outcome} differed by {r.randint(1, 30)} percent between groups."]
        decision = decisions[i % len(decisions)]
        out[str(start_pmid + 7 * i)] = {
            "QUESTION": f"Does {exp} change {outcome}?", "CONTEXTS": ctx,
            "LABELS": ["OBJECTIVE", "METHODS", "RESULTS"], "MESHES": [r.choice(DIAGNOSES).title()],
            "YEAR": str(r.randint(1995, 2018)), "reasoning_required_pred": decision,
            "reasoning_free_pred": decision, "final_decision": decision,
            "LONG_ANSWER": f"Our data suggest the answer is {decision} for {outcome}."}
    return out


def alpaca(r: random.Random, n: int, medical: bool) -> list[dict[str, str]]:
    """Alpaca-style instruction records; about a third have an empty input."""
    out = []
    for i in range(n):
        topic = r.choice(TOPICS).format(o=r.choice(ORGANS), d=r.choice(DIAGNOSES), g=r.choice(DRUGS), t=r.choice(TESTS))
        if not medical:
            topic = r.choice(["a plan for a rainy day", "the benefits of reading", "how to boil an egg", topic])
        inp = "" if i % 3 == 0 else f"Audience: {r.choice(['a student', 'a nurse', 'a parent'])}."
        out.append({"instruction": f"{r.choice(VERBS)} {topic}.", "input": inp,
                    "output": f"In short, {topic} matters because {r.choice(SYMPTOMS)} and {r.choice(OUTCOMES)} "
                              f"depend on it; ask a clinician about {r.choice(TESTS)}."})
    return out


def example(r: random.Random, kind: int, cot: bool) -> dict[str, Any]:
    """One exemplar record: kind 0 MC, 1 PubMedQA-style, 2 free answer (with an explanation if cot)."""
    if kind == 0:
        rec = medqa(r, 1, 4)[0]
        ex = {"question": rec["question"], "options": rec["options"], "answer": rec["answer_idx"]}
        why = f"The findings point to {rec['answer']} rather than the other options."
    elif kind == 1:
        item = next(iter(pubmedqa(r, 1, (r.choice(["yes", "no", "maybe"]),), 1).values()))
        ex = {"question": item["QUESTION"], "context": " ".join(item["CONTEXTS"]), "answer": item["final_decision"]}
        why = "The cohort results bear on the question directly."
    else:
        d = r.choice(DIAGNOSES)
        ex = {"question": f"How can I tell if I have {d}?", "answer": f"See a doctor; {d} is confirmed by {r.choice(TESTS)}."}
        why = ""
    if cot:
        ex["explanation"] = why
    return ex


def examples(r: random.Random, n: int, cot: bool) -> list[dict[str, Any]]:
    """Exemplar records cycling MC, PubMedQA-style and free-answer kinds (with explanations if cot)."""
    return [example(r, i % 3 if not cot else i % 2, cot) for i in range(n)]


# The released code's medpalm / CoT sub-sources (evaluation/instruct_dataset.py:39-51) and the kind of
# exemplar each holds: MC (0) for USMLE, MedMCQA, MMLU; PubMedQA-style (1); free answer (2) for the
# consumer-health sets.
RELEASED_SUBSOURCES = {
    "medpalm": {"usmleqa": 0, "medmcqa": 0, "pubmedqa": 1, "liveqa": 2, "medicationqa": 2},
    "medpalm-cot": {"usmleqa": 0, "medmcqa": 0, "pubmedqa": 1, "mmlu": 0},
    "medpalm2-cot": {"usmleqa": 0, "medmcqa": 0, "pubmedqa": 1, "mmlu": 0},
}


def released_examples() -> dict[str, str]:
    """examples/released/<sub>_<set>.json: two exemplars per sub-source of the released 20-source mixture.

    Drawn from their own generator, after everything else, so the other fixtures stay byte for byte.
    """
    r = random.Random(SEED + 1)
    files = {}
    for setname, subs in RELEASED_SUBSOURCES.items():
        for sub, kind in subs.items():
            recs = [example(r, kind, cot=setname.endswith("-cot")) for _ in range(2)]
            files[f"examples/released/{sub}_{setname}.json"] = _json(recs)
    return files


def bad_files(r: random.Random) -> dict[str, Any]:
    """One file per format holding good records and one bad record of every kind."""
    mq = medqa(r, 6, 4)
    del mq[1]["answer_idx"]                     # missing field
    mq[2]["answer_idx"] = "E"                   # answer letter not among the 4 options
    mq[3]["answer"] = "a drug not listed"       # answer text not the chosen option
    mq[4]["options"] = ["x", "y"]               # options not an object
    mq_lines = [json.dumps(x) for x in mq]
    mq_lines.insert(5, '{"question": "truncated')  # not JSON (line 6)

    mm = medmcqa(r, 5, 0)
    del mm[1]["opc"]                            # missing option
    mm[2]["cop"] = 7                            # answer not an option
    mm[3]["cop"] = None                         # missing answer
    mixed = medmcqa(r, 4, 0) + medmcqa(r, 4, 1)  # 0 and 4 both occur
    ambiguous = [dict(x, cop=1 + i % 3) for i, x in enumerate(medmcqa(r, 3, 1))]

    pq = pubmedqa(r, 4, ("yes", "no"), 30000001)
    keys = list(pq)
    del pq[keys[1]]["CONTEXTS"]                 # missing field
    pq[keys[2]]["final_decision"] = "perhaps"   # not yes/no/maybe

    al = alpaca(r, 5, True)
    del al[1]["output"]                         # missing field
    al[2]["instruction"] = 42                   # wrong type
    al[3] = ["not", "an", "object"]             # not an object

    ex = examples(r, 4, cot=True)
    ex[0]["answer"] = "F"                       # answer not among options (record 1 is MC)
    del ex[1]["explanation"]                    # cot without explanation
    return {"medqa_bad.jsonl": "\n".join(mq_lines) + "\n",
            "medmcqa_bad.jsonl": _jsonl(mm), "medmcqa_mixed_cop.jsonl": _jsonl(mixed),
            "medmcqa_ambiguous_cop.jsonl": _jsonl(ambiguous), "pubmedqa_bad.json": _json(pq),
            "alpaca_bad.json": _json(al), "examples_bad.json": _json(ex)}


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in rows)


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=1) + "\n"


def fixtures() -> dict[str, str]:
    """Return {relative path: file text} of every fixture."""
    r = random.Random(SEED)
    files = {
        "medqa/train_4opt.jsonl": _jsonl(medqa(r, 40, 4)),
        "medqa/train_5opt.jsonl": _jsonl(medqa(r, 30, 5)),
        "medmcqa/train_cop1.jsonl": _jsonl(medmcqa(r, 60, 1)),
        "medmcqa/train_cop0.jsonl": _jsonl(medmcqa(r, 40, 0)),
        "pubmedqa/ori_pqal.json": _json(pubmedqa(r, 24, ("yes", "no", "maybe"), 10000003)),
        "pubmedqa/ori_pqaa.json": _json(pubmedqa(r, 60, ("yes", "no"), 20000011)),
        "alpaca/alpaca_data_cleaned.json": _json(alpaca(r, 40, medical=False)),
        "visual-med-alpaca/med_alpaca_data.json": _json(alpaca(r, 40, medical=True)),
        "examples/medpalm.json": _json(examples(r, 9, cot=False)),
        "examples/medpalm_cot.json": _json(examples(r, 6, cot=True)),
        "examples/medpalm2_cot.json": _json(examples(r, 6, cot=True)),
        "examples/mmlu_cot.json": _json(examples(r, 12, cot=True)),
        "examples/codex_cot.json": _json(examples(r, 3, cot=True)),
    }
    files.update({f"bad/{k}": v for k, v in bad_files(r).items()})
    files.update(released_examples())
    return files


def main() -> None:
    """Write the fixtures (default data/sample/instruct), or check them with --check."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/sample/instruct"))
    ap.add_argument("--check", action="store_true", help="Only compare with the files on disk; exit 1 if any differs.")
    args = ap.parse_args()
    out = args.out
    if args.check:
        stale = [rel for rel, text in fixtures().items()
                 if not (out / rel).is_file() or (out / rel).read_text(encoding="utf-8") != text]
        if stale:
            raise SystemExit(f"{len(stale)} fixture file(s) differ from the generator, e.g. {out / stale[0]}")
        print(f"ok: {len(fixtures())} files under {out} match the generator")
        return
    for rel, text in fixtures().items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    print(f"wrote {len(fixtures())} files under {out}")


if __name__ == "__main__":
    main()
