"""The params models' defaults are the demo's params.yaml, key for key (issue 22, item 3).

A params file that leaves a key (or a whole section) out gets the demo's value; the paper profile
(configs/paper.yaml) spells out every value it sets, so its composition does not depend on the defaults.
"""

from __future__ import annotations

from typing import Any

import pytest

from biomed_llama.config import Params, load_params, validate_params
from tests.helpers import REPO


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key → value of every leaf (a mapping's entries are leaves of their own; an empty mapping is one leaf)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict) and v:
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.fixture(scope="module")
def demo() -> dict[str, Any]:
    return _flat(load_params(REPO / "params.yaml").model_dump(mode="json"))


def test_every_default_equals_the_demo(demo):
    default = _flat(Params().model_dump(mode="json"))
    assert default.keys() == demo.keys()
    differ = {k: (default[k], demo[k]) for k in default if default[k] != demo[k]}
    assert differ == {}, "the default (left) must equal params.yaml's value (right)"


@pytest.mark.parametrize("section", [name for name in Params.model_fields if name not in ("seed", "profile")])
def test_an_empty_section_is_the_demos(demo, section):
    """A params file whose section is written but empty (`eval: {}`) gets the demo's section."""
    got = _flat({section: validate_params({section: {}}).model_dump(mode="json")[section]})
    assert got == {k: v for k, v in demo.items() if k.startswith(f"{section}.")}
