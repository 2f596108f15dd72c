"""Post-mortem of a saved PEFT adapter, without re-running training: which LoRA layers never trained, and,
given two checkpoints of one run, which tensors changed and by how much (`lora-trace inspect`).

The weights are read by parsing the safetensors file here (8-byte little-endian header length, a JSON
header, raw little-endian buffers) rather than through `safetensors.numpy`: that loader refuses bf16,
the usual dtype of a saved adapter, and falling back to torch would make a torch-free post-mortem depend
on torch. The format is small enough to validate fully (offsets inside the file, sizes matching shapes),
so a truncated or foreign file gives a plain message instead of a traceback. Pickle files
(`adapter_model.bin`) are refused: loading one runs arbitrary code.

"Never trained" rests on PEFT's initialisation: with `init_lora_weights` True, "gaussian" or "eva", lora_B
(for embeddings: lora_embedding_A) starts at exactly zero, so one still all zero after training never got
an update; and while it is zero, lora_A gets no gradient either (dL/dA = B^T dL/dy x^T). Other inits start
both factors non-zero: then only two checkpoints can tell, and the report says so.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from .core.errors import BadInputError, LoraTraceError
from .core.printable import json_printable, printable
from .core.regions import region_of, short_name
from .saved_adapter_report import AdapterChanges, AdapterReport, LoraLayer, TensorChange

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LORA_ROLES = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")
ZERO_B_INITS = (True, "gaussian", "eva")  # PEFT 0.21 inits that leave lora_B (embedding: A) at zero
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
_MAX_HEADER = 100 * 1024 * 1024  # the limit the safetensors library itself enforces


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """One tensor of a safetensors file: where its bytes are, not the bytes (records hold no arrays)."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute offset in the file
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def read_header(path: pathlib.Path) -> tuple[TensorEntry, ...]:
    """Every tensor entry of a safetensors file, validated against the file's size; no data is read."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 2 or length > min(_MAX_HEADER, size - 8):
            raise _malformed(path, "its header length does not fit the file")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _malformed(path, "its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _malformed(path, "its header is not a JSON object")
    base, entries = 8 + length, []
    for key, spec in sorted(header.items()):
        if key == "__metadata__":
            continue
        entry = _entry(path, key, spec, base)
        if entry.end > size:
            raise _malformed(path, f"tensor {key} ends at byte {entry.end} of a {size}-byte file (truncated?)")
        entries.append(entry)
    return tuple(entries)


def _entry(path: pathlib.Path, key: str, spec: object, base: int) -> TensorEntry:
    if not isinstance(spec, dict):
        raise _malformed(path, f"the entry of {key} is not an object")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if dtype not in _DTYPES:
        raise BadInputError(f"{path}: tensor {key} has dtype {dtype!r}, which lora-trace cannot read; "
                            f"re-save the adapter in one of {', '.join(sorted(_DTYPES))}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
            and isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise _malformed(path, f"the shape or offsets of {key} are invalid")
    if offsets[1] - offsets[0] != math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize:
        raise _malformed(path, f"the byte size of {key} does not match its shape and dtype")
    return TensorEntry(key, dtype, tuple(shape), base + offsets[0], base + offsets[1])


def _malformed(path: pathlib.Path, what: str) -> BadInputError:
    return BadInputError(f"{path} is not a readable safetensors file: {what}; re-save the adapter with "
                         "model.save_pretrained(DIR)")


def read_tensor(handle: BinaryIO, entry: TensorEntry) -> np.ndarray:
    """One tensor as float64 (bf16: its 16 bits are the top half of a float32)."""
    handle.seek(entry.start)
    data = handle.read(entry.end - entry.start)
    if len(data) != entry.end - entry.start:
        raise BadInputError(f"tensor {entry.key} is cut short: the file changed while it was read")
    array = np.frombuffer(data, dtype=_DTYPES[entry.dtype])
    if entry.dtype == "BF16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float64).reshape(entry.shape)


def _split_key(key: str) -> tuple[str, str, str] | None:
    """(module, LoRA role, rest) of a saved key, or None for a tensor that is not a LoRA factor."""
    parts = key.split(".")
    for index, part in enumerate(parts):
        if part in LORA_ROLES and index > 0:
            return ".".join(parts[:index]), part, ".".join(parts[index + 1 :])
    return None


def _module_and_role(key: str) -> tuple[str, str]:
    """(module without PEFT's prefix, role): `...q_proj.lora_A.weight` -> q_proj's path, `lora_A`;
    a non-LoRA tensor (`base_model.model.lm_head.weight`) -> `lm_head`, `weight`."""
    split = _split_key(key)
    module, role = (split[0], split[1]) if split else (key.rsplit(".", 1) + [""])[:2]
    module = short_name(module)
    return module.removesuffix(".base_layer"), role


def _locate(path: str | pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """The adapter's config and weights files, or a BadInputError that says what to pass instead."""
    folder = pathlib.Path(path)
    if not folder.is_dir():
        raise BadInputError(f"{folder} is not a folder; pass the folder model.save_pretrained() wrote")
    config, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config.is_file():
        inner = sorted(p.parent.name for p in folder.glob(f"*/{CONFIG_FILE}"))
        hint = f"it holds adapters in subfolders {', '.join(inner)}: pass one of those" if inner else \
            "pass the folder model.save_pretrained() wrote"
        raise BadInputError(f"{folder} has no {CONFIG_FILE}; {hint}")
    if not weights.is_file():
        if (folder / "adapter_model.bin").is_file():
            raise BadInputError(f"{folder} holds adapter_model.bin, a pickle file, which lora-trace never loads "
                                "(loading it can run code); re-save with "
                                "model.save_pretrained(DIR, safe_serialization=True)")
        raise BadInputError(f"{folder} has no {WEIGHTS_FILE}; re-save with model.save_pretrained(DIR)")
    return config, weights


def _read_config(path: pathlib.Path) -> dict[str, object]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadInputError(f"{path} is not valid JSON; re-save the adapter with model.save_pretrained(DIR)") \
            from None
    if not isinstance(config, dict):
        raise BadInputError(f"{path} is not a JSON object; re-save the adapter with model.save_pretrained(DIR)")
    return config


def _zero_test_reason(peft_type: str, init: object) -> str | None:
    if peft_type != "LORA":
        return (f"peft_type {peft_type}: the zero test is defined for LoRA only; "
                "compare two checkpoints to see which tensors changed")
    if (init.lower() if isinstance(init, str) else init) in ZERO_B_INITS:
        return None
    if init is False:
        return "init_lora_weights=false: lora_A and lora_B both start random, so a zero lora_B proves nothing"
    return (f"init_lora_weights={init!r}: lora_B does not start at zero, so its value after training "
            "cannot show whether it trained")


def inspect_adapter(path: str | pathlib.Path) -> AdapterReport:
    """Read a saved adapter folder and find the LoRA layers whose zero-initialised factor is still zero."""
    config_path, weights_path = _locate(path)
    config = _read_config(config_path)
    peft_type = str(config.get("peft_type", "LORA")).upper()
    init = config.get("init_lora_weights", True)
    reason = _zero_test_reason(peft_type, init)
    entries = read_header(weights_path)
    modules: dict[str, list[TensorEntry]] = {}
    zero_factors: dict[str, TensorEntry] = {}  # per module: lora_B.weight, or lora_embedding_A
    others = []
    for entry in entries:
        split = _split_key(entry.key)
        if split is None:
            others.append(entry.key)
            continue
        modules.setdefault(split[0], []).append(entry)
        if split[1] in ("lora_B", "lora_embedding_A") and split[2] != "bias":
            zero_factors[split[0]] = entry
    layers = []
    with weights_path.open("rb") as handle:
        for module, tensors in sorted(modules.items()):
            factor = zero_factors.get(module) if reason is None else None
            zero = None if factor is None else not np.any(read_tensor(handle, factor))
            name = short_name(module)
            layers.append(LoraLayer(name, region_of(name), name.rsplit(".", 1)[-1],
                                    tuple(sorted(e.key for e in tensors)), sum(e.numel for e in tensors), zero))
    summary = {key: config.get(key) for key in ("r", "lora_alpha", "target_modules", "init_lora_weights",
                                                "use_dora", "modules_to_save") if key in config}
    return AdapterReport(str(path), peft_type, summary, tuple(sorted({e.dtype for e in entries})), tuple(layers),
                         tuple(others), reason)


def compare_adapters(before: str | pathlib.Path, after: str | pathlib.Path) -> AdapterChanges:
    """Compare two checkpoints of one run tensor by tensor: what changed, by how much, what is in one only."""
    (config_a, weights_a), (config_b, weights_b) = _locate(before), _locate(after)
    conf_a, conf_b = _read_config(config_a), _read_config(config_b)
    types = [str(c.get("peft_type", "LORA")).upper() for c in (conf_a, conf_b)]
    if types[0] != types[1]:
        raise BadInputError(f"the two adapters are of different PEFT types ({types[0]} and {types[1]}); "
                            "give two checkpoints of one run")
    diffs = {key: [conf_a.get(key), conf_b.get(key)] for key in ("r", "lora_alpha", "target_modules", "use_dora")
             if conf_a.get(key) != conf_b.get(key)}
    entries_a = {e.key: e for e in read_header(weights_a)}
    entries_b = {e.key: e for e in read_header(weights_b)}
    common = sorted(set(entries_a) & set(entries_b))
    same_shape = [key for key in common if entries_a[key].shape == entries_b[key].shape]
    if not same_shape:
        raise BadInputError("the two adapters share no tensor of the same name and shape; "
                            "give two checkpoints of one run")
    changes = []
    with weights_a.open("rb") as handle_a, weights_b.open("rb") as handle_b:
        for key in same_shape:
            a, b = read_tensor(handle_a, entries_a[key]), read_tensor(handle_b, entries_b[key])
            delta = b - a
            changed = not np.array_equal(a, b, equal_nan=True)
            norm_a, norm_delta = float(np.linalg.norm(a)), float(np.linalg.norm(delta))
            rel = norm_delta / norm_a if norm_a > 0 else (0.0 if norm_delta == 0 else None)
            module, role = _module_and_role(key)
            changes.append(TensorChange(key, region_of(module), module.rsplit(".", 1)[-1], role, changed,
                                        _finite(rel), _finite(float(np.max(np.abs(delta), initial=0.0)))))
    return AdapterChanges(str(before), str(after), tuple(changes),
                          tuple(key for key in common if key not in same_shape),
                          tuple(sorted(set(entries_a) - set(entries_b))),
                          tuple(sorted(set(entries_b) - set(entries_a))), diffs, inspect_adapter(after))


def _finite(value: float | None) -> float | None:
    """NaN and inf (a diverged run) as None, so the JSON stays JSON."""
    return value if value is not None and math.isfinite(value) else None


def add_parser(verbs: argparse._SubParsersAction) -> None:
    """Add the `inspect` verb to the CLI's subparsers; `main(args)` runs it."""
    inspect = verbs.add_parser("inspect", help="which LoRA tensors of a saved adapter never trained "
                               "(exit 0: none found, 1: some, 2: bad input); with two folders, what changed")
    inspect.add_argument("adapter", metavar="ADAPTER_DIR")
    inspect.add_argument("other", metavar="ADAPTER_DIR_2", nargs="?",
                         help="a later checkpoint of the same run: compare tensor by tensor")
    inspect.add_argument("--json", action="store_true", help="print the result as JSON")


def main(args: argparse.Namespace) -> int:
    """Run `inspect` on parsed arguments; bad input gives one line on stderr and exit 2, never a traceback."""
    try:
        result = compare_adapters(args.adapter, args.other) if args.other else inspect_adapter(args.adapter)
    except (LoraTraceError, OSError) as error:
        print(printable(f"lora-trace: {error}"), file=sys.stderr)
        return 2
    print(json_printable(json.dumps(result.to_dict(), indent=1)) if args.json else printable(str(result)))
    return result.exit_code
