"""Saved artefacts as JSON: one encoder and one decoder for every kind (a run, a comparison, a distributed
run). UTF-8, schema-versioned, validated on load, never pickle; non-finite numbers are written as the
strings "nan", "inf", "-inf". Torch-free.

Saved objects are dataclasses; encoding and decoding follow their type hints, so a new field needs no
code here. Each kind has a loader next to its class: `load` (runs, here), `load_comparison`,
`load_distributed`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
import types
import typing
from typing import Any, TypeVar

from .errors import RunFormatError
from .findings import Code, Diagnosis, Severity

SCHEMA_VERSION = 1
KIND = "lora-trace.run"
MAX_BYTES = 64 * 1024 * 1024
T = TypeVar("T")


def encode(value: Any) -> Any:
    """Plain JSON values: dataclasses as objects, enums by value, tuples as lists, non-finite floats as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [encode(v) for v in value]
    return value


def to_document(kind: str, value: Any) -> dict[str, Any]:
    """The JSON document of a saved object: its kind, the schema version, its fields."""
    return {"kind": kind, "schema_version": SCHEMA_VERSION, **encode(value)}


def write_document(document: dict[str, Any], path: str | os.PathLike[str]) -> None:
    text = json.dumps(document, ensure_ascii=False, indent=1, allow_nan=False)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")


def read_document(path: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES) -> Any:
    """Parsed JSON of a saved file; the read itself is bounded (a stream or a device has no honest size)."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as error:
        raise RunFormatError(f"cannot read {name!r}: {error.strerror or error}") from None
    if len(raw) > max_bytes:
        raise RunFormatError(f"{name!r} is over the {max_bytes}-byte limit; pass max_bytes= to load it anyway")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunFormatError(f"{name!r} is not a lora-trace file (not UTF-8 JSON: {error})") from None
    except RecursionError:
        raise RunFormatError(f"{name!r} is not a lora-trace file (JSON nested too deeply)") from None


def from_document(data: Any, kind: str, cls: type[T], *, source: str = "the data",
                  derived: tuple[str, ...] = ()) -> T:
    """The object of class `cls` saved as a `kind` document; `derived` names keys written for readers only."""
    what = kind.rsplit(".", 1)[-1]
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else None
        hint = f" (it is a {found!r} file)" if isinstance(found, str) and found.startswith("lora-trace.") else ""
        raise RunFormatError(f"{source} is not a lora-trace {what} (no \"kind\": \"{kind}\"){hint}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RunFormatError(f"{source} has schema_version {version!r}; this lora-trace reads version "
                             f"{SCHEMA_VERSION}. Upgrade lora-trace, or re-create the file.")
    fields = {k: v for k, v in data.items() if k not in ("kind", "schema_version", *derived)}
    try:
        return _decode(cls, fields, what)
    except _Mismatch as error:
        raise RunFormatError(f"{source} is malformed: {error}") from None
    except RecursionError:
        raise RunFormatError(f"{source} is malformed: nested too deeply") from None


def diagnosis_to_dict(diagnosis: Diagnosis) -> dict[str, Any]:
    return to_document(KIND, diagnosis)


def diagnosis_from_dict(data: Any, *, source: str = "the data") -> Diagnosis:
    diagnosis = from_document(data, KIND, Diagnosis, source=source)
    problem = _dangling(diagnosis)
    if problem:
        raise RunFormatError(f"{source} is malformed: {problem}")
    return diagnosis


def _dangling(diagnosis: Diagnosis) -> str | None:
    """What the types cannot say: codes and severities lora-trace knows, references that point somewhere."""
    codes, severities = {c.value for c in Code}, {s.value for s in Severity}
    for i, finding in enumerate(diagnosis.findings):
        if finding.code not in codes:
            return f"findings[{i}].code {finding.code!r:.60} is not a finding code (a newer lora-trace's run?)"
        if finding.severity not in severities:
            return f"findings[{i}].severity {finding.severity!r:.60} is not one of {sorted(severities)}"
    trace = diagnosis.trace
    seqs = {call.seq for call in trace.region_calls}
    for i, call in enumerate(trace.region_calls):
        if (call.parent is not None and call.parent not in seqs) or not set(call.fed_by) <= seqs:
            return f"trace.region_calls[{i}] refers to a region call that is not in the run"
    if not set(trace.loss_fed_by) <= seqs:
        return "trace.loss_fed_by refers to a region call that is not in the run"
    for i, call in enumerate(trace.calls):
        if call.cut is not None and not 0 <= call.cut < len(trace.cuts):
            return f"trace.calls[{i}].cut {call.cut} is not the index of a cut in the run"
    return None


def save_diagnosis(diagnosis: Diagnosis, path: str | os.PathLike[str]) -> None:
    write_document(diagnosis_to_dict(diagnosis), path)


def load(path: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES) -> Diagnosis:
    """Read a run saved by `Diagnosis.save`; RunFormatError with a plain message when it is not one."""
    return diagnosis_from_dict(read_document(path, max_bytes=max_bytes), source=os.fspath(path))


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
        hints = _hints(kind)
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


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(kind: type) -> dict[str, Any]:
    """Type hints of a saved dataclass, resolved once (the classes of higher layers included)."""
    if kind not in _HINTS:
        _HINTS[kind] = typing.get_type_hints(kind, vars(__import__(kind.__module__, fromlist=["_"])))
    return _HINTS[kind]
