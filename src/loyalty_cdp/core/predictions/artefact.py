"""Fitted models as plain dicts, so they can be stored and reloaded as versioned artefacts."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, ClassVar, Protocol, TypeVar

from loyalty_cdp.errors import InvalidInput

ARTEFACT_FORMAT = 1


class FittedModel(Protocol):
    """A frozen dataclass of numbers (and a ``converged`` flag) named by ``MODEL_NAME``."""

    MODEL_NAME: ClassVar[str]
    __dataclass_fields__: ClassVar[dict[str, Any]]


ModelT = TypeVar("ModelT", bound=FittedModel)


def model_to_dict(model: FittedModel) -> dict[str, Any]:
    """``{"model": name, "format": 1, <every field>}``, JSON-ready."""
    values = {field.name: getattr(model, field.name) for field in fields(model)}
    return {"model": model.MODEL_NAME, "format": ARTEFACT_FORMAT, **values}


def model_from_dict(model_class: type[ModelT], data: Mapping[str, Any]) -> ModelT:
    """Rebuild a model from :func:`model_to_dict` output, rejecting anything malformed."""
    if not isinstance(data, Mapping):
        raise InvalidInput("model", "an artefact must be a mapping")
    if data.get("model") != model_class.MODEL_NAME:
        raise InvalidInput(
            "model", f"expected a {model_class.MODEL_NAME!r} artefact, got {data.get('model')!r}"
        )
    if data.get("format") != ARTEFACT_FORMAT:
        raise InvalidInput("format", f"unsupported artefact format {data.get('format')!r}")
    values: dict[str, Any] = {}
    for field in fields(model_class):
        if field.name not in data:
            raise InvalidInput(field.name, "missing from the model artefact")
        value = data[field.name]
        if field.type in (bool, "bool"):
            if not isinstance(value, bool):
                raise InvalidInput(field.name, "must be true or false")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(field.name, "must be a number")
        elif not math.isfinite(value):
            raise InvalidInput(field.name, "must be finite")
        else:
            value = float(value)
        values[field.name] = value
    return model_class(**values)
