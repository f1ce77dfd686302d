"""The base of every params model: unknown keys are errors and each field's docstring is its help."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A params section: extra keys forbidden, assignments validated, field docstrings kept as descriptions."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True,
                              protected_namespaces=())
