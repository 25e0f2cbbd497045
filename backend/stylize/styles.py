"""Style specifications (``toon``, ``exemplar:IMG``, ``model:FILE``, ``frames:DIR``) to stylizers."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import InputError
from .base import Stylizer

STYLE_KINDS = ("cel", "toon", "exemplar", "model", "frames")
BUILTIN_WITHOUT_ARGUMENT = ("cel", "toon")
STYLE_HELP = "cel | toon | exemplar:IMAGE | model:FILE (.pt TorchScript or .onnx) | frames:DIR"


def parse_style(spec: str) -> tuple[str, str]:
    """Split ``kind:argument``; InputError for an unknown kind or a missing argument."""
    kind, _, argument = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in STYLE_KINDS:
        raise InputError(f"unknown style {spec!r}; use {STYLE_HELP}")
    if kind in BUILTIN_WITHOUT_ARGUMENT and argument:
        raise InputError(f"the {kind} style takes no argument, got {spec!r}; use --param to tune it")
    if kind not in BUILTIN_WITHOUT_ARGUMENT and not argument:
        raise InputError(f"the {kind} style needs a path: --style {kind}:PATH")
    return kind, argument


def parse_params(items: list[str] | None) -> dict[str, str]:
    """``["levels=4", "strength=0.8"]`` -> ``{"levels": "4", "strength": "0.8"}``."""
    params: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--param expects KEY=VALUE, got {item!r}")
        params[key.strip().replace("-", "_")] = value.strip()
    return params


def build_params(params_class, values: dict[str, Any], style: str):
    """Make a params dataclass from strings/numbers; InputError naming unknown or bad keys."""
    known = {f.name: f for f in dataclasses.fields(params_class)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InputError(f"unknown parameter(s) {unknown} for the {style} style; "
                         f"known: {', '.join(known)}")
    converted: dict[str, Any] = {}
    for key, value in values.items():
        default = getattr(params_class(), key)
        try:
            converted[key] = int(value) if isinstance(default, int) else float(value)
        except (TypeError, ValueError):
            raise InputError(f"parameter {key}={value!r} of the {style} style must be a number") from None
    return params_class(**converted)


def builtin_stylizer(spec: str, params: dict[str, Any] | None = None) -> Stylizer:
    """A ``cel``, ``toon`` or ``exemplar:IMG`` stylizer with ``params`` (name -> value)."""
    kind, argument = parse_style(spec)
    params = params or {}
    if kind == "cel":
        from .cel import CelParams, CelStylizer

        return CelStylizer(build_params(CelParams, params, "cel"))
    if kind == "toon":
        from .toon import ToonParams, ToonStylizer

        return ToonStylizer(build_params(ToonParams, params, "toon"))
    if kind == "exemplar":
        from .exemplar import exemplar_stylizer, load_exemplar

        return exemplar_stylizer(load_exemplar(argument), params, source=argument)
    raise InputError(f"{spec!r} is not a built-in style; built-in styles are cel, toon "
                     "and exemplar:IMAGE")


def model_stylizer(path: str, overrides: dict[str, Any] | None = None, device: str = "cpu",
                   params: dict[str, Any] | None = None) -> Stylizer:
    """A user model (TorchScript or ONNX) with its conventions (sidecar JSON, then ``overrides``)."""
    from .models import ModelStylizer, load_conventions, load_runner

    if params:
        raise InputError(f"--param {sorted(params)} applies to the built-in styles; a model's settings "
                         "go in its sidecar JSON or the --model-* flags")
    conventions = load_conventions(path, overrides)
    return ModelStylizer(load_runner(path, device), conventions, path)
