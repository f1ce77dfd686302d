"""The base of every params model: unknown keys are errors and each field's docstring is its help."""

from __future__ import annotations

import types
import typing
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

_SCALARS = (str, int, float, bool)


def _is_list(annotation: Any) -> bool:
    """True for `list[...]` and `Optional[list[...]]` (not a union that also takes a scalar, e.g. `str | list[str]`)."""
    origin = typing.get_origin(annotation)
    if origin is list:
        return True
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(rest) == 1 and _is_list(rest[0])
    return False


def _section_type(annotation: Any) -> type[StrictModel] | None:
    """The section model a field holds (`Section` or `Optional[Section]`), or None for any other field."""
    if isinstance(annotation, type) and issubclass(annotation, StrictModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return _section_type(rest[0])
    return None


class StrictModel(BaseModel):
    """A params section: extra keys forbidden, assignments validated, field docstrings kept as descriptions.

    A scalar given for a list field is a one-item list (`--set extract.train=PATH` = `[PATH]`).
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True, protected_namespaces=()
    )

    # The section's speed-only fields (DESIGN contract 11): they change how fast or where a stage runs, what it
    # logs or how often it saves, never a number it computes. Recorded in every manifest, but not DVC params
    # (dvc.yaml lists every other key; tests/test_dvc_params.py checks it against `speed_only_keys`).
    SPEED_ONLY: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _scalar_as_one_item_list(cls, value: Any, info: ValidationInfo) -> Any:
        assert info.field_name is not None  # a field validator always runs for a named field
        if isinstance(value, _SCALARS) and _is_list(cls.model_fields[info.field_name].annotation):
            return [value]
        return value

    @classmethod
    def speed_only_keys(cls, prefix: str = "") -> set[str]:
        """Dotted keys of every speed-only field of this section and the sections nested in it."""
        out = set()
        for name, f in cls.model_fields.items():
            if name in cls.SPEED_ONLY:
                out.add(prefix + name)
            elif (sub := _section_type(f.annotation)) is not None:
                out |= sub.speed_only_keys(f"{prefix}{name}.")
        return out

    def section_dict(self) -> dict[str, Any]:
        """This section as plain JSON-able data (what a stage records in its manifest)."""
        return self.model_dump(mode="json")


def describe_error(err: ValidationError, source: str) -> str:
    """One line naming the first invalid key of `err` (and how many more there are), prefixed by `source`."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in first and not isinstance(first["input"], (dict, list)):
        msg += f" (got {first['input']!r})"
    more = len(err.errors()) - 1
    return f"{source}: {key}: {msg}" + (f" (+{more} more)" if more else "")
