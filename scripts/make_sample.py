#!/usr/bin/env python
"""Generate the embedded demo's sample Pile corpus and the tokenizer trained on it.

Writes (relative to `--out`, default the repository root):

- `data/sample/pile/train/00.jsonl.zst`, `train/01.jsonl.zst`, `val.jsonl.zst`, `test.jsonl.zst`:
  Pile-format records `{"text": …, "meta": {"pile_set_name": …}}`, one JSON object a line,
  zstd-compressed. The text is GENERATED from templates and invented vocabulary (no real text is
  copied): PubMed-style abstracts, longer PubMed-Central-style papers with sections, and records
  of other Pile subsets (Wikipedia (en), Github, FreeLaw) that extraction must drop.
  `train/01.jsonl.zst` also holds a few malformed lines (broken JSON, empty text, no text, no
  meta) so the demo exercises the bad-record path.
- `data/sample/tokenizer/`: a byte-level BPE tokenizer (vocab 4096; `<unk>`=0, `<s>`=1,
  `</s>`=2, `<pad>`=3) trained on the train texts, saved as a Hugging Face fast tokenizer that
  adds no BOS/EOS by itself. Byte-level BPE maps every UTF-8 byte, so any text round-trips.

Everything is seeded and single-threaded, so two runs give identical bytes; `--check`
regenerates into a temporary folder and compares with the committed files (exit 1 on a
difference).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

# Tokenizer training must not depend on thread scheduling: set before `tokenizers` is imported.
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

SEED = 20240521
VOCAB_SIZE = 4096
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]  # ids 0, 1, 2, 3 in this order
ZSTD_LEVEL = 19
PILE_DIR = Path("data/sample/pile")
TOKENIZER_DIR = Path("data/sample/tokenizer")

# (file, documents per subset): the layout of the corpus.
LAYOUT = {
    "train/00.jsonl.zst": {"PubMed Abstracts": 90, "PubMed Central": 45, "Wikipedia (en)": 30, "Github": 20, "FreeLaw": 15},
    "train/01.jsonl.zst": {"PubMed Abstracts": 90, "PubMed Central": 45, "Wikipedia (en)": 30, "Github": 20, "FreeLaw": 15},
    "val.jsonl.zst": {"PubMed Abstracts": 26, "PubMed Central": 14, "Wikipedia (en)": 8, "Github": 6, "FreeLaw": 6},
    "test.jsonl.zst": {"PubMed Abstracts": 26, "PubMed Central": 14, "Wikipedia (en)": 8, "Github": 6, "FreeLaw": 6},
}
# Malformed lines inserted into train/01 at these 1-based line numbers (after insertion).
MALFORMED = {
    7: '{"text": "Background: an unterminated record, "meta": {"pile_set_name": "PubMed Abstracts"}',
    23: json.dumps({"text": "", "meta": {"pile_set_name": "PubMed Abstracts"}}),
    58: json.dumps({"meta": {"pile_set_name": "PubMed Central"}}),
    91: json.dumps({"text": "Results were consistent across the cohort."}),
}

# --- invented vocabulary (syllables and templates; names are generated, not real entities) ----

_SYL = ["ba", "cor", "da", "fen", "ga", "lin", "mo", "nex", "pra", "quo", "ri", "sol", "ta", "vi", "xa",
        "zen", "lor", "mer", "tri", "dol", "kan", "pel", "sor", "ven"]
_DRUG_SUFFIX = ["mab", "nib", "pril", "sartan", "statin", "olol", "azole", "cycline", "parin", "tide"]
_DISEASES = ["type 2 diabetes", "chronic kidney disease", "heart failure", "asthma", "rheumatoid arthritis",
             "hepatocellular carcinoma", "sepsis", "major depressive disorder", "ischemic stroke",
             "chronic obstructive pulmonary disease", "psoriasis", "multiple sclerosis", "tuberculosis",
             "atrial fibrillation", "colorectal cancer", "Parkinson's disease", "osteoporosis",
             "community-acquired pneumonia", "non-alcoholic fatty liver disease", "migraine"]
_TISSUES = ["serum", "plasma", "whole blood", "urine", "cerebrospinal fluid", "tumour tissue", "bronchial lavage",
            "skeletal muscle", "adipose tissue", "saliva"]
_DESIGNS = ["a randomized, double-blind, placebo-controlled trial", "a prospective cohort study",
            "a retrospective case-control study", "a cross-sectional survey", "an open-label phase II trial",
            "a multicentre registry analysis", "a systematic review and meta-analysis",
            "a single-centre pilot study"]
_OUTCOMES = ["all-cause mortality", "hospital readmission", "progression-free survival", "HbA1c level",
             "forced expiratory volume", "quality of life", "pain score", "length of stay", "relapse rate",
             "serum creatinine", "systolic blood pressure", "viral load"]
_METHODS = ["quantitative PCR", "RNA sequencing", "flow cytometry", "western blotting", "ELISA",
            "immunohistochemistry", "mass spectrometry", "whole-exome sequencing", "CRISPR knockout screens",
            "single-cell RNA sequencing", "Cox proportional hazards models", "mixed-effects regression"]
_MODELS = ["C57BL/6 mice", "Sprague-Dawley rats", "zebrafish larvae", "human iPSC-derived cardiomyocytes",
           "HEK293 cells", "primary hepatocytes", "patient-derived organoids"]
_EFFECTS = ["reduced", "increased", "did not change", "attenuated", "enhanced", "restored"]
_PLACES = ["northern", "southern", "coastal", "rural", "urban", "eastern", "western"]


def _word(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(_SYL) for _ in range(parts))


def drug(rng: random.Random) -> str:
    """An invented drug name (syllables + a pharmacological suffix)."""
    return _word(rng, rng.randint(1, 2)) + rng.choice(_DRUG_SUFFIX)


def gene(rng: random.Random) -> str:
    """An invented gene symbol such as `KRB3` or `TLX12A`."""
    letters = "".join(rng.choice("ABCDEFGHKLMNPRSTVWXZ") for _ in range(rng.randint(2, 4)))
    return letters + str(rng.randint(1, 19)) + (rng.choice(["", "", "A", "B"]))


def pvalue(rng: random.Random) -> str:
    """A p-value string, sometimes with a unicode comparator."""
    return rng.choice([f"p = 0.0{rng.randint(1, 49):02d}", f"p < 0.001", f"p = {rng.uniform(0.06, 0.9):.2f}",
                       "p ≤ 0.01"])


def ci(rng: random.Random) -> str:
    """A hazard/odds ratio with a 95% confidence interval."""
    r = rng.uniform(0.4, 1.8)
    lo, hi = r * rng.uniform(0.6, 0.9), r * rng.uniform(1.1, 1.5)
    kind = rng.choice(["HR", "OR", "RR"])
    return f"{kind} {r:.2f}, 95% CI {lo:.2f}–{hi:.2f}"


def _abstract_parts(rng: random.Random) -> dict[str, str]:
    d, g, dis = drug(rng), gene(rng), rng.choice(_DISEASES)
    n = rng.choice([24, 36, 48, 60, 96, 120, 212, 348, 512, 1024, 2310, 4875])
    age = rng.randint(28, 71)
    dose = rng.choice(["5 mg", "10 mg", "25 mg", "50 mg", "200 µg", "1.5 g"])
    weeks = rng.choice([4, 8, 12, 24, 26, 52])
    out = rng.choice(_OUTCOMES)
    background = rng.choice([
        f"{dis.capitalize()} remains a leading cause of morbidity, and the role of {g} in its pathogenesis is poorly understood.",
        f"Few studies have examined whether {d} modifies {out} in patients with {dis}.",
        f"Expression of {g} has been linked to disease activity in {dis}, but prospective evidence is lacking.",
        f"Current treatment options for {dis} are limited by adverse effects and incomplete response.",
    ])
    methods = rng.choice([
        f"We conducted {rng.choice(_DESIGNS)} of {n} adults (mean age {age} years) with {dis}. Participants received {d} {dose} daily or placebo for {weeks} weeks. The primary outcome was {out}.",
        f"In {rng.choice(_DESIGNS)}, we measured {g} in {rng.choice(_TISSUES)} from {n} participants using {rng.choice(_METHODS)} and related it to {out}.",
        f"Using {rng.choice(_MODELS)}, we assessed the effect of {d} on {g} signalling by {rng.choice(_METHODS)} and {rng.choice(_METHODS)}.",
    ])
    results = rng.choice([
        f"Treatment with {d} {rng.choice(_EFFECTS)} {out} compared with placebo ({ci(rng)}; {pvalue(rng)}). Adverse events occurred in {rng.randint(3, 40)}% of participants.",
        f"Higher {g} levels were associated with {out} after adjustment for age, sex and comorbidity ({ci(rng)}).",
        f"{d.capitalize()} {rng.choice(_EFFECTS)} {g} expression by {rng.randint(12, 85)}% ± {rng.randint(2, 11)}% ({pvalue(rng)}), and the effect persisted for {weeks} weeks.",
    ])
    conclusion = rng.choice([
        f"{d.capitalize()} may be a useful adjunct in {dis}; larger trials are warranted.",
        f"{g} is a candidate biomarker for {out} in {dis}.",
        f"These findings support further investigation of the {g} pathway as a therapeutic target.",
        f"Our data do not support routine use of {d} for {dis}.",
    ])
    return {"background": background, "methods": methods, "results": results, "conclusion": conclusion,
            "drug": d, "gene": g, "disease": dis}


def pubmed_abstract(rng: random.Random) -> str:
    """A structured (or plain) abstract with a title line, like a PubMed Abstracts record."""
    p = _abstract_parts(rng)
    title = rng.choice([
        f"Effect of {p['drug']} on outcomes in {p['disease']}",
        f"{p['gene']} expression and prognosis in {p['disease']}: {rng.choice(_DESIGNS)}",
        f"Role of {p['gene']} in {p['disease']}",
    ])
    if rng.random() < 0.6:
        body = (f"BACKGROUND: {p['background']}\nMETHODS: {p['methods']}\nRESULTS: {p['results']}\n"
                f"CONCLUSIONS: {p['conclusion']}")
    else:
        body = " ".join([p["background"], p["methods"], p["results"], p["conclusion"]])
    return f"{title}\n\n{body}"


def pubmed_central(rng: random.Random) -> str:
    """A longer full-text paper with sections (Introduction … Discussion), like a PubMed Central record."""
    p = _abstract_parts(rng)
    paras = {
        "Introduction": [p["background"]] + [_abstract_parts(rng)["background"] for _ in range(rng.randint(2, 4))],
        "Methods": [p["methods"]] + [
            f"Samples were processed within {rng.randint(1, 6)} hours and stored at −80 °C. "
            f"{rng.choice(_METHODS).capitalize()} was performed in triplicate."
            for _ in range(rng.randint(1, 3))] + [
            f"Statistical analysis used {rng.choice(_METHODS)}; a two-sided {pvalue(rng)} threshold was prespecified."],
        "Results": [p["results"]] + [_abstract_parts(rng)["results"] for _ in range(rng.randint(2, 5))],
        "Discussion": [p["conclusion"]] + [
            f"Several limitations apply. The cohort was drawn from {rng.choice(_PLACES)} centres, and "
            f"{rng.choice(_OUTCOMES)} was assessed only at {rng.choice([4, 12, 26, 52])} weeks."
            for _ in range(rng.randint(1, 2))] + [_abstract_parts(rng)["conclusion"]],
    }
    title = f"{p['gene']} and {p['drug']} in {p['disease']}: {rng.choice(['a mechanistic study', 'a clinical cohort', 'an integrative analysis'])}"
    sections = [f"{name}\n\n" + "\n\n".join(texts) for name, texts in paras.items()]
    return f"{title}\n\n==== Body\n\n" + "\n\n".join(sections) + "\n\n==== Refs\n" + "\n".join(
        f"{_word(rng, 2).capitalize()} {rng.choice('ABCDEFGHJK')}, et al. J {_word(rng, 2).capitalize()} Res. "
        f"{rng.randint(1990, 2020)};{rng.randint(1, 90)}:{rng.randint(1, 900)}." for _ in range(rng.randint(3, 8)))


def wikipedia(rng: random.Random) -> str:
    """An encyclopaedia-style article about an invented town (a subset extraction drops)."""
    name = _word(rng, 3).capitalize()
    river = _word(rng, 2).capitalize()
    return (f"{name}\n\n{name} is a town in the {rng.choice(_PLACES)} part of the {river} valley. "
            f"It had a population of {rng.randint(800, 90000)} at the {rng.randint(1950, 2020)} census. "
            f"The town grew around a {rng.choice(['mill', 'market', 'railway station', 'harbour'])} "
            f"in the {rng.randint(12, 19)}th century.\n\nGeography\n\nThe {river} river runs "
            f"{rng.randint(3, 40)} km through the municipality.")


def github(rng: random.Random) -> str:
    """A small generated Python source file (a subset extraction drops)."""
    fn, arg = _word(rng, 2), _word(rng, 1)
    return (f'"""Utilities for {_word(rng, 2)}."""\n\nimport {rng.choice(["os", "sys", "json", "math"])}\n\n\n'
            f"def {fn}({arg}, limit={rng.randint(1, 100)}):\n"
            f"    total = 0\n    for i, x in enumerate({arg}):\n        if i >= limit:\n            break\n"
            f"        total += x * {rng.randint(2, 9)}\n    return total\n")


def freelaw(rng: random.Random) -> str:
    """A generated court-opinion excerpt (a subset extraction drops)."""
    a, b = _word(rng, 2).capitalize(), _word(rng, 3).capitalize()
    return (f"{a} v. {b}\n\nOPINION\n\nThe appellant challenges the judgment of the district court entered on "
            f"{rng.choice(['March', 'June', 'October'])} {rng.randint(1, 28)}, {rng.randint(1970, 2019)}. "
            f"We review the grant of summary judgment de novo. Because the record shows no genuine dispute "
            f"of material fact, we AFFIRM.")


GENERATORS = {"PubMed Abstracts": pubmed_abstract, "PubMed Central": pubmed_central,
              "Wikipedia (en)": wikipedia, "Github": github, "FreeLaw": freelaw}


def make_lines(name: str, counts: dict[str, int], rng: random.Random) -> list[str]:
    """Return the JSON lines of one shard: the subsets' documents interleaved in a seeded order."""
    subsets = [s for s, n in counts.items() for _ in range(n)]
    rng.shuffle(subsets)
    lines = [json.dumps({"text": GENERATORS[s](rng), "meta": {"pile_set_name": s}}) for s in subsets]
    if name == "train/01.jsonl.zst":
        for lineno in sorted(MALFORMED):
            lines.insert(lineno - 1, MALFORMED[lineno])
    return lines


def write_pile(root: Path) -> None:
    """Write the four Pile shards under `root/data/sample/pile`."""
    import zstandard

    rng = random.Random(SEED)
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
    for name, counts in LAYOUT.items():
        lines = make_lines(name, counts, rng)
        path = root / PILE_DIR / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(cctx.compress(("\n".join(lines) + "\n").encode("utf-8")))


def train_tokenizer(texts: list[str], out: Path) -> None:
    """Train a byte-level BPE on `texts` and save it as a HF fast tokenizer directory at `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=1, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                 pad_token="<pad>", clean_up_tokenization_spaces=False)
    shutil.rmtree(out, ignore_errors=True)  # no stale files from an older tokenizer format
    out.mkdir(parents=True)
    hf.save_pretrained(str(out))


def check_roundtrip(tokenizer_dir: Path, texts: list[str]) -> None:
    """Raise AssertionError unless decode(encode(t)) == t for every text, with no BOS/EOS added."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    for t in texts:
        ids = tok(t)["input_ids"]
        if ids and (ids[0] == tok.bos_token_id or ids[-1] == tok.eos_token_id):
            raise AssertionError("the tokenizer adds BOS/EOS by itself")
        if tok.decode(ids) != t:
            raise AssertionError(f"round trip failed for {t[:60]!r}")


def all_texts(root: Path, names: list[str] | None = None) -> list[str]:
    """Return the texts of every well-formed record of the sample's shards `names` (default: all) under `root`."""
    import io

    import zstandard

    texts = []
    for name in names or list(LAYOUT):
        with open(root / PILE_DIR / name, "rb") as f:
            reader = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8")
            for line in reader:
                try:
                    text = json.loads(line).get("text")
                except ValueError:
                    continue
                if text:
                    texts.append(text)
    return texts


def generate(root: Path) -> None:
    """Write the sample corpus and tokenizer under `root`, and check the tokenizer round-trips them."""
    write_pile(root)
    train_tokenizer(all_texts(root, [n for n in LAYOUT if n.startswith("train/")]), root / TOKENIZER_DIR)
    check_roundtrip(root / TOKENIZER_DIR, all_texts(root))


def committed_files(root: Path) -> list[Path]:
    """Return the generated files under `root`, relative to it, sorted."""
    return sorted(p.relative_to(root) for d in (PILE_DIR, TOKENIZER_DIR) for p in (root / d).rglob("*") if p.is_file())


def compare(fresh: Path, repo: Path) -> list[str]:
    """Return the differences (missing, unexpected, differing files) of `repo`'s sample against `fresh`'s."""
    want, have = committed_files(fresh), committed_files(repo)
    problems = [f"missing: {p}" for p in want if p not in have]
    problems += [f"unexpected: {p}" for p in have if p not in want]
    problems += [f"differs: {p}" for p in want if p in have and not filecmp.cmp(fresh / p, repo / p, shallow=False)]
    return problems


def check(repo: Path) -> list[str]:
    """Regenerate into a temporary folder; return the differences with the files under `repo`."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        return compare(Path(tmp), repo)


def main(argv: list[str] | None = None) -> int:
    """CLI: generate the sample into `--out`, or `--check` it against the committed files."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1],
                    help="Folder that receives data/sample/… (default: the repository root).")
    ap.add_argument("--check", action="store_true", help="Regenerate in a temp dir and compare bytes with --out.")
    args = ap.parse_args(argv)
    if args.check:
        problems = check(args.out)
        for p in problems:
            print(p, file=sys.stderr)
        print("sample is up to date" if not problems else f"{len(problems)} difference(s)")
        return 1 if problems else 0
    generate(args.out)
    print(f"wrote {args.out / PILE_DIR} and {args.out / TOKENIZER_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
