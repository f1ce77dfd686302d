"""Profiles compose (DESIGN contract 12): a base params file plus overlays, merged into one params file.

`configs/paper.yaml` is the one source of the paper's values. Other profiles (the README's intent,
`configs/overlays/intent.yaml`) and size overlays (`configs/overlays/gpu-smoke.yaml`) are small files
holding only the keys they change. `biomed-llama compose BASE [OVERLAY ...] --out params.yaml` merges
them in order and writes the result with a header naming each source and its sha256, so a composed
`params.yaml` says where every value came from and DVC, which reads only `params.yaml`, sees the result.

Merge rules (those of Hydra/OmegaConf and llm-foundry's YAML overrides, minus interpolation):
- a mapping merges key by key, recursively;
- a scalar, a list or `null` replaces the value below it whole (a list is never appended to: the
  order of a list such as `instruct_mix.sources` is part of what it means);
- a key tagged `!delete` (`pmc-llama: !delete`) removes the key below it; deleting an absent key is an
  error, since it is most likely a typo.
The result is validated as `Params` before anything is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from biomed_llama.config import Params, apply_overrides, read_yaml, validate_params
from biomed_llama.errors import ConfigError
from biomed_llama.fsutil import atomic_write_text


class _Delete:
    """The value of a key tagged `!delete`: remove the key from what lies below."""

    def __repr__(self) -> str:
        return "!delete"


DELETE = _Delete()


class _Loader(yaml.SafeLoader):
    """SafeLoader plus the `!delete` tag (no other tag, no Python objects)."""


_Loader.add_constructor("!delete", lambda loader, node: DELETE)


def read_layer(path: str | Path) -> dict[str, Any]:
    """Read one profile layer (base or overlay); a missing or malformed file is a ConfigError."""
    return read_yaml(Path(path), _Loader, "profile file")


def merge(base: dict[str, Any], overlay: dict[str, Any], source: str = "overlay", where: str = "") -> dict[str, Any]:
    """Return `base` with `overlay` merged over it (neither is modified); see the module docstring for the rules."""
    out = dict(base)
    for key, value in overlay.items():
        path = f"{where}.{key}" if where else str(key)
        if value is DELETE:
            if key not in out:
                raise ConfigError(f"{source}: {path}: !delete of a key the layers below do not set")
            del out[key]
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, source, path)
        else:
            out[key] = _strip_deletes(value, source, path)
    return out


def _strip_deletes(value: Any, source: str, where: str) -> Any:
    """A value that replaces whole may not hold `!delete` (there is nothing below it to delete from)."""
    if value is DELETE:
        raise ConfigError(f"{source}: {where}: !delete of a key the layers below do not set")
    if isinstance(value, dict):
        return {k: _strip_deletes(v, source, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_deletes(v, source, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def compose(paths: Sequence[str | Path]) -> dict[str, Any]:
    """Merge the layers in order (the first is the base) into one raw params dict."""
    if not paths:
        raise ConfigError("compose: name at least the base profile, e.g. configs/paper.yaml")
    data: dict[str, Any] = {}
    for path in paths:
        data = merge(data, read_layer(path), str(path))
    return data


def load_profile(paths: Sequence[str | Path], overrides: Sequence[str] = ()) -> Params:
    """Compose the layers, apply `--set` overrides and validate: the Params a composed params.yaml would give."""
    source = " + ".join(str(p) for p in paths)
    return validate_params(apply_overrides(compose(paths), overrides), source)


def header(paths: Sequence[str | Path]) -> str:
    """The composed file's header: each source with the sha256 of its bytes, and how to compose again."""
    lines = [
        "# Composed by `biomed-llama compose`; do not edit: change a source and compose again.",
        "# Sources, in merge order (the first is the base):",
    ]
    for path in paths:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        lines.append(f"#   {path}  sha256:{digest}")
    lines.append("# Command: biomed-llama compose " + " ".join(str(p) for p in paths) + " --out <this file>")
    return "\n".join(lines) + "\n"


def composed_sources(text: str) -> list[str]:
    """The source paths named in a composed file's header (empty for a file that was not composed)."""
    sources = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("#   ") and "  sha256:" in line:
            sources.append(line[4:].split("  sha256:")[0])
    return sources


def write_composed(paths: Sequence[str | Path], out: str | Path) -> Params:
    """Compose, validate and write `out` (atomically, with the header), every key spelled out; return the Params."""
    params = validate_params(compose(paths), " + ".join(str(p) for p in paths))
    # Every key is written, defaults included: dvc.yaml names single keys as params (not the speed-only
    # ones), and DVC refuses a params file that lacks a key it names.
    body = yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=110)
    atomic_write_text(out, header(paths) + body)
    return params
