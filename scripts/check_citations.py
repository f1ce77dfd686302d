"""Print every `file.py:NN` citation of this package beside the lines it cites in the original code.

A citation is a file name or path with a known suffix followed by `:` and line numbers, e.g.
`utils/data.py:80-83`, `main.py:119`, `trainer.py:1690,1702`. Each is resolved against the local copies
of the original repositories given on the command line (Coldog2333/BioMed-LLaMA; a folder of the
transformers fork may be given too): the files whose path ends with the cited path. The report shows, per
citation, where it is cited and the cited lines, so a reviewer can confirm each in one read; a citation
whose file is not found, or is found more than once, or whose lines lie past the file's end, is flagged.

    # the original as a work tree (the search tool's `fetch` gives a bare git dir: export it first)
    git --git-dir=/work/.mirror/Coldog2333+BioMed-LLaMA/repo archive HEAD | tar -x -C /tmp/orig
    python scripts/check_citations.py /tmp/orig [/tmp/transformers-fork/src/transformers]

Scanned here: biomed_llama/ (code, README and the eval task YAMLs), configs/, tests/, README.md; a file
holding the marker `check-citations: skip-file` is left out (the script's own test, whose citations are made up).
Exit status 1 when a citation lies past the end of its file, else 0.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

SUFFIXES = ("py", "sh", "json", "txt", "yaml", "yml", "md", "def", "cfg", "toml")
CITATION = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w.-]+\.(?:" + "|".join(SUFFIXES) + r")):(\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*)")
SCANNED = ("biomed_llama", "configs", "tests", "README.md")
SCANNED_SUFFIXES = {".py", ".yaml", ".yml", ".md"}
CONTEXT_LINES = 12  # at most this many cited lines are printed per citation
SKIP_FILE = "check-citations: skip-file"  # a file holding this (the script's own test) cites nothing real


class Citation:
    """One cited (path, line ranges) with every place in the package that cites it, and the first citing
    line (`claim`, stripped): what the citation is said to show. (A plain class: the tests load this script
    by path, outside `sys.modules`, where a dataclass cannot resolve its annotations.)"""

    def __init__(self, path: str, spans: list[tuple[int, int]], claim: str = ""):
        self.path, self.spans, self.claim = path, spans, claim
        self.cited_at: list[str] = []


def parse_spans(text: str) -> list[tuple[int, int]]:
    """`80-83,101` → [(80, 83), (101, 101)]."""
    spans = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        spans.append((int(lo), int(hi or lo)))
    return spans


def scan(root: Path) -> dict[tuple[str, str], Citation]:
    """Every citation in the scanned files under `root`, keyed by (path, line text), in first-seen order."""
    found: dict[tuple[str, str], Citation] = {}
    files: list[Path] = []
    for name in SCANNED:
        p = root / name
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in SCANNED_SUFFIXES
                            and "__pycache__" not in f.parts)
    for f in files:
        text = f.read_text(errors="replace")
        if SKIP_FILE in text:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            for m in CITATION.finditer(line):
                key = (m.group(1), m.group(2))
                cit = found.setdefault(key, Citation(m.group(1), parse_spans(m.group(2)), claim=line.strip()[:200]))
                cit.cited_at.append(f"{f.relative_to(root).as_posix()}:{n}")
    return found


def index_files(repos: list[Path]) -> dict[str, list[Path]]:
    """Every file of the original repositories by its base name."""
    by_name: dict[str, list[Path]] = {}
    for repo in repos:
        for f in sorted(repo.rglob("*")):
            if f.is_file() and ".git" not in f.parts:
                by_name.setdefault(f.name, []).append(f)
    return by_name


def resolve(path: str, by_name: dict[str, list[Path]]) -> list[Path]:
    """The original files whose path ends with the cited `path` (component-wise)."""
    parts = path.split("/")
    return [f for f in by_name.get(parts[-1], []) if list(f.parts[-len(parts):]) == parts]


def _in_range(lines: int, spans: list[tuple[int, int]]) -> bool:
    return all(1 <= a <= b <= lines for a, b in spans)


def choose(hits: list[Path], spans: list[tuple[int, int]], repos: list[Path]) -> tuple[list[Path], bool]:
    """The candidate files to show, best first, and whether the lines lie inside the best one.

    Files the cited lines fit come first; among them, a file of an earlier-given repository, then the
    shallower path (`evaluation/main.py` before the vendored `github/lm-evaluation-harness/main.py`)."""
    def rank(f: Path) -> tuple[int, int, int]:
        repo = next(i for i, r in enumerate(repos) if f.is_relative_to(r))
        n = len(f.read_text(errors="replace").splitlines())
        return (0 if _in_range(n, spans) else 1, repo, len(f.relative_to(repos[repo]).parts))

    ranked = sorted(hits, key=rank)
    return ranked, rank(ranked[0])[0] == 0


def report(root: Path, repos: list[Path], out=sys.stdout) -> dict[str, int]:
    """Print each citation and the lines it cites in its best-matching file; return the counts by outcome.

    Marks: `==` one file of that name, `~~` several (the best shown; the others named), `!!` the lines lie
    past the end of every candidate, `??` no file of that name."""
    by_name = index_files(repos)
    counts = {"citations": 0, "resolved": 0, "ambiguous": 0, "not_found": 0, "past_end": 0}
    for cit in scan(root).values():
        counts["citations"] += 1
        spans = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in cit.spans)
        where = ", ".join(cit.cited_at[:4]) + (f" (+{len(cit.cited_at) - 4} more)" if len(cit.cited_at) > 4 else "")
        hits = resolve(cit.path, by_name)
        if not hits:
            counts["not_found"] += 1
            print(f"?? {cit.path}:{spans}  cited at {where}: no such file in the given repositories", file=out)
            continue
        ranked, fits = choose(hits, cit.spans, repos)
        best = ranked[0]
        rel = next(best.relative_to(r).as_posix() for r in repos if best.is_relative_to(r))
        lines = best.read_text(errors="replace").splitlines()
        if not fits:
            flag = "!!"
            counts["past_end"] += 1
        else:
            flag = "~~" if len(hits) > 1 else "=="
            counts["ambiguous" if len(hits) > 1 else "resolved"] += 1
        print(f"{flag} {cit.path}:{spans} → {rel} ({len(lines)} lines)  cited at {where}", file=out)
        print(f"   says: {cit.claim}", file=out)
        if len(hits) > 1:
            others = [next(h.relative_to(r).as_posix() for r in repos if h.is_relative_to(r)) for h in ranked[1:4]]
            print(f"   (also named so: {', '.join(others)}{' …' if len(hits) > 4 else ''})", file=out)
        shown = 0
        for a, b in cit.spans:
            for n in range(a, min(b, len(lines)) + 1):
                if shown == CONTEXT_LINES:
                    break
                print(f"   {n:>5} | {lines[n - 1]}", file=out)
                shown += 1
    print(f"{counts['citations']} citations: {counts['resolved']} in the one file of that name (==), "
          f"{counts['ambiguous']} in the best of several (~~), {counts['not_found']} not found (??), "
          f"{counts['past_end']} past the end of every candidate (!!)", file=out)
    return counts


def main(argv: list[str] | None = None) -> int:
    """CLI: `check_citations.py ORIGINAL [ORIGINAL ...] [--root PACKAGE_ROOT]`."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repos", nargs="+", type=Path, help="local copies (work trees) of the original repositories")
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="this package's checkout")
    args = ap.parse_args(argv)
    for repo in args.repos:
        if not repo.is_dir():
            print(f"error: {repo} is not a folder (export the original repository there first)", file=sys.stderr)
            return 2
    counts = report(args.root, [r.resolve() for r in args.repos])
    return 1 if counts["past_end"] else 0


if __name__ == "__main__":
    sys.exit(main())
