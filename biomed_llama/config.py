"""Typed params: every section of params.yaml as a pydantic model, loaded with `--set` overrides.

`load_params` is the only way stages get their config. A problem (unknown key, wrong type,
impossible value) becomes a ConfigError whose message is one line naming the key; the CLI
prints it and exits with code 2.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from biomed_llama.benchmarks.config import ReadersConfig
from biomed_llama.contamination.config import ContaminationConfig
from biomed_llama.data.config import ExtractConfig, TokenizeConfig
from biomed_llama.errors import ConfigError
from biomed_llama.eval.config import EvalConfig
from biomed_llama.inputs import InputRoots, check_roots
from biomed_llama.instruct.config import InstructMixConfig
from biomed_llama.launch.config import LaunchConfig
from biomed_llama.model.config import ModelConfig
from biomed_llama.schema import StrictModel, describe_error
from biomed_llama.train.config import FinetuneConfig, PretrainConfig

DEFAULT_PARAMS = Path("params.yaml")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class Params(StrictModel):
    """All params of the pipeline; `params.yaml` is the embedded demo, `configs/*.yaml` other profiles."""

    seed: int = 1234
    """Master seed: shuffles, initialisation and sampling derive their seeds from it."""
    profile: str = "demo"
    """Name of the profile, recorded in manifests and reports."""
    inputs: InputRoots = Field(default_factory=InputRoots)
    """The folders the raw inputs lie under (DVC tracks them; every input path must lie inside its root)."""
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    """Pile extraction (stage `extract`)."""
    tokenize: TokenizeConfig = Field(default_factory=TokenizeConfig)
    """Tokenization (stage `tokenize`)."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The base model: a HF directory or a random init from shape params."""
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    """Continued pretraining (stage `pretrain`)."""
    readers: ReadersConfig = Field(default_factory=ReadersConfig)
    """How published benchmark files are read; used by instruct-mix, finetune task mode and prepare-eval."""
    instruct_mix: InstructMixConfig = Field(default_factory=InstructMixConfig)
    """Instruction mixture (stage `instruct-mix`)."""
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    """Instruction tuning and task fine-tuning (stage `finetune`)."""
    contamination: ContaminationConfig = Field(default_factory=ContaminationConfig)
    """Benchmark contamination of the pretraining corpus (stage `contamination`)."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """Evaluation (stages `prepare-eval`, `evaluate`)."""
    launch: LaunchConfig = Field(default_factory=LaunchConfig)
    """How the training stages are launched: local torchrun or Slurm."""


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into (["a","b","c"], value parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set pretrain.optim.lr=3e-5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads `3e-5` (no dot) as a string
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `--set` overrides to a raw params dict (in place) and return it."""
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: Path, loader: type[yaml.SafeLoader] = yaml.SafeLoader, what: str = "params file") -> dict[str, Any]:
    """Read a params YAML file into a dict; a missing or malformed file is a ConfigError.

    `loader` is SafeLoader or a subclass of it (profiles.py adds the `!delete` tag); `what` names the file in errors.
    """
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def validate_params(data: dict[str, Any], source: str = "params") -> Params:
    """Validate a raw dict into Params; one-line ConfigError on failure."""
    try:
        return Params.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_error(e, source)) from None


def load_params(path: str | Path = DEFAULT_PARAMS, overrides: Sequence[str] = ()) -> Params:
    """Load, override and validate params from `path` (default params.yaml), every input path against its `inputs` root."""
    path = Path(path)
    params = validate_params(apply_overrides(read_yaml(path), overrides), str(path))
    # The roots matter for the params file DVC reads, so they are checked where a file is loaded
    # (every stage command), not in the model: relative and absolute paths are compared through
    # the working directory, which is the checkout when a stage runs.
    problem = check_roots(params)
    if problem:
        raise ConfigError(f"{path}: {problem}")
    return params
