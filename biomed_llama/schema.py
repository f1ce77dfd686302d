"""The base of every params model: unknown keys are errors and each field's docstring is its help."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

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


class StrictModel(BaseModel):
    """A params section: extra keys forbidden, assignments validated, field docstrings kept as descriptions.

    A scalar given for a list field is a one-item list (`--set extract.train=PATH` = `[PATH]`).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True,
                              protected_namespaces=())

    @field_validator("*", mode="before")
    @classmethod
    def _scalar_as_one_item_list(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, _SCALARS) and _is_list(cls.model_fields[info.field_name].annotation):
            return [value]
        return value
