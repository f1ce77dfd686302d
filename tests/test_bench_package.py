"""bench/ runs as a package (`python -m bench.<name>`): no script edits `sys.path` to find the package, the
scripts or another bench module, so what a bench imports is what the package and `scripts` provide."""

from __future__ import annotations

import re

from tests.helpers import REPO


def test_no_bench_module_edits_sys_path():
    offenders = [p.relative_to(REPO).as_posix() for p in sorted((REPO / "bench").rglob("*.py"))
                 if re.search(r"sys\.path\.(insert|append)", p.read_text())]
    assert offenders == []


def test_bench_is_a_package():
    assert (REPO / "bench" / "__init__.py").is_file()
