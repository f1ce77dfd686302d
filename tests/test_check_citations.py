"""`scripts/check_citations.py` on a synthetic original repository and a synthetic package checkout.

check-citations: skip-file (the citations below are made up for the synthetic repository)
"""

from __future__ import annotations

import io
from pathlib import Path

from tests.helpers import load_script

cc = load_script("check_citations")


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _original(tmp: Path) -> Path:
    return _tree(tmp / "orig", {
        "evaluation/main.py": "".join(f"main line {i}\n" for i in range(1, 11)),
        "github/harness/main.py": "other main 1\nother main 2\n",
        "utils/data.py": "a\nb\nc\n",
    })


def test_each_citation_is_printed_beside_its_lines_and_flagged(tmp_path):
    orig = _original(tmp_path)
    pkg = _tree(tmp_path / "pkg", {
        "biomed_llama/x.py": "# as released (utils/data.py:2-3) and main.py:9,10\n",
        "configs/p.yaml": "k: 1  # main.py:9,10 again; utils/data.py:7 is past the end\n",
        "tests/t.py": "# absent.py:1 and not_a_citation.py: 3 and url.py:x\n",
        "README.md": "see `evaluation/main.py:1`\n",
        "scripts/ignored.py": "# utils/data.py:1 (scripts/ is not scanned)\n",
        "tests/own_test.py": f"# {cc.SKIP_FILE}\n# utils/data.py:1\n",
    })
    out = io.StringIO()
    counts = cc.report(pkg, [orig], out=out)
    text = out.getvalue()
    assert counts == {"citations": 5, "resolved": 2, "ambiguous": 1, "not_found": 1, "past_end": 1}
    assert "== utils/data.py:2-3 → utils/data.py (3 lines)  cited at biomed_llama/x.py:1" in text
    assert "       2 | b\n       3 | c\n" in text
    # two files are named main.py; lines 9 and 10 exist only in evaluation/main.py, which is shown
    assert "~~ main.py:9,10 → evaluation/main.py (10 lines)  cited at biomed_llama/x.py:1, configs/p.yaml:1" in text
    assert "       9 | main line 9\n      10 | main line 10\n" in text and "(also named so: github/harness/main.py)" in text
    assert "!! utils/data.py:7 → utils/data.py (3 lines)" in text
    assert "?? absent.py:1" in text and "== evaluation/main.py:1 →" in text
    assert "says: # as released (utils/data.py:2-3) and main.py:9,10" in text
    assert text.rstrip().endswith("1 past the end of every candidate (!!)")


def test_cli_exits_1_on_a_citation_past_the_end_and_2_without_the_repository(tmp_path, capsys):
    orig = _original(tmp_path)
    ok = _tree(tmp_path / "ok", {"README.md": "utils/data.py:3\n"})
    bad = _tree(tmp_path / "bad", {"README.md": "utils/data.py:4\n"})
    assert cc.main([str(orig), "--root", str(ok)]) == 0
    assert cc.main([str(orig), "--root", str(bad)]) == 1
    assert cc.main([str(tmp_path / "missing"), "--root", str(ok)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_spans_and_the_citation_pattern():
    assert cc.parse_spans("80-83,101") == [(80, 83), (101, 101)]
    found = [m.group(0) for m in cc.CITATION.finditer("x (a/b.py:1-2), c.sh:3; d.txt:4,6-7 e.py: 5 http://f.py:9")]
    assert found == ["a/b.py:1-2", "c.sh:3", "d.txt:4,6-7"]
