"""Runs as JSON: UTF-8, schema-versioned, validated on load, never pickle. Torch-free.

Records are dataclasses; encoding and decoding follow their type hints, so a new field needs no code here.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import types
import typing
from typing import Any

from .errors import RunFormatError
from .findings import Diagnosis, Finding
from .records import Trace

SCHEMA_VERSION = 1
KIND = "lora-trace.run"
MAX_BYTES = 64 * 1024 * 1024


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    return value


def diagnosis_to_dict(diagnosis: Diagnosis) -> dict[str, Any]:
    return {"kind": KIND, "schema_version": SCHEMA_VERSION, "findings": _encode(list(diagnosis.findings)),
            "trace": _encode(diagnosis.trace)}


def save_diagnosis(diagnosis: Diagnosis, path: str | os.PathLike[str]) -> None:
    text = json.dumps(diagnosis_to_dict(diagnosis), ensure_ascii=False, indent=1, allow_nan=False)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")


def load(path: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES) -> Diagnosis:
    """Read a run saved by `Diagnosis.save`; RunFormatError with a plain message when it is not one."""
    try:
        size = os.path.getsize(path)
    except OSError as error:
        raise RunFormatError(f"cannot read {os.fspath(path)!r}: {error.strerror or error}") from None
    if size > max_bytes:
        raise RunFormatError(f"{os.fspath(path)!r} is {size} bytes, over the {max_bytes}-byte limit; "
                             "pass max_bytes= to load it anyway")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunFormatError(f"{os.fspath(path)!r} is not a lora-trace run (not UTF-8 JSON: {error})") from None
    return diagnosis_from_dict(data, source=os.fspath(path))


def diagnosis_from_dict(data: Any, *, source: str = "the data") -> Diagnosis:
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise RunFormatError(f"{source} is not a lora-trace run (no \"kind\": \"{KIND}\")")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RunFormatError(f"{source} has schema_version {version!r}; this lora-trace reads version "
                             f"{SCHEMA_VERSION}. Upgrade lora-trace, or re-create the run.")
    try:
        findings = _decode(tuple[Finding, ...], data.get("findings"), "findings")
        trace = _decode(Trace, data.get("trace"), "trace")
    except _Mismatch as error:
        raise RunFormatError(f"{source} is malformed: {error}") from None
    return Diagnosis(findings, trace)


class _Mismatch(Exception):
    pass


def _decode(kind: Any, value: Any, where: str) -> Any:  # noqa: C901 - one branch per kind of type
    origin = typing.get_origin(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _decode(option, value, where)
            except _Mismatch:
                continue
        raise _Mismatch(f"{where}: unexpected value {value!r:.60}")
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise _Mismatch(f"{where}: expected an object")
        hints = typing.get_type_hints(kind)
        fields = {f.name: f for f in dataclasses.fields(kind)}
        unknown = set(value) - set(fields)
        if unknown:
            raise _Mismatch(f"{where}: unknown field {sorted(unknown)[0]!r}")
        args = {}
        for name, field in fields.items():
            if name in value:
                args[name] = _decode(hints[name], value[name], f"{where}.{name}")
            elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise _Mismatch(f"{where}: missing field {name!r}")
        return kind(**args)
    if origin is tuple:
        if not isinstance(value, list):
            raise _Mismatch(f"{where}: expected a list")
        item_types = typing.get_args(kind)
        if len(item_types) == 2 and item_types[1] is Ellipsis:
            return tuple(_decode(item_types[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(item_types) != len(value):
            raise _Mismatch(f"{where}: expected {len(item_types)} items")
        return tuple(_decode(t, v, f"{where}[{i}]") for i, (t, v) in enumerate(zip(item_types, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch(f"{where}: expected an object")
        _, value_type = typing.get_args(kind)
        return {k: _decode(value_type, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except ValueError:
            raise _Mismatch(f"{where}: {value!r:.40} is not a known {kind.__name__}") from None
    if kind is float:
        if isinstance(value, str) and value in ("nan", "inf", "-inf"):
            return float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch(f"{where}: expected a number")
    if kind in (int, str, bool):
        if type(value) is not kind:
            raise _Mismatch(f"{where}: expected {kind.__name__}")
        return value
    if kind is object:
        return value
    raise _Mismatch(f"{where}: cannot decode {kind!r}")
