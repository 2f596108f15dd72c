"""`lora-trace targets`: what a target_modules value would select, on a model built from its config.json
on the meta device (no weights, seconds even at 7B), with PEFT's own matching."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import BadInputError, InvalidModelError
from ..core.messages import say
from ..core.records import TargetEntry
from ..core.regions import region_of
from .matching import candidate_modules, candidate_parameters, entry_table, matches, parameter_matches
from .peft import expand_all_linear


def config_path(spec: str) -> str:
    """A config.json, a model folder holding one, or a model id found in the local Hugging Face cache (never
    the network: a debugging tool must work offline and must not download a model behind the user's back)."""
    if os.path.isfile(spec):
        return spec
    if os.path.isdir(spec):
        path = os.path.join(spec, "config.json")
        if not os.path.isfile(path):
            raise InvalidModelError(f"the folder {spec!r} has no config.json: pass a model folder or a config.json")
        return path
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(spec, "config.json")
    except HFValidationError:
        cached = None
    if isinstance(cached, str):
        return cached
    raise InvalidModelError(f"{spec!r} is neither a file, a folder, nor a model id in the local Hugging Face cache "
                            f"({constants.HF_HUB_CACHE}); fetch its config once with "
                            f"`hf download {spec} config.json`, or pass the path of a config.json")


def model_from_config(path: str) -> nn.Module:
    """The class named by `architectures[0]` (else the Auto class for the config), built on meta."""
    import transformers

    path = config_path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise InvalidModelError(f"cannot read the model config {path!r}: {error}") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise InvalidModelError(f"{path!r} has no \"model_type\": pass a transformers config.json")
    try:
        config = transformers.AutoConfig.for_model(**data)
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidModelError(f"transformers cannot build a config from {path!r}: {error}") from None
    architecture = (data.get("architectures") or [None])[0]
    model_class = getattr(transformers, architecture, None) if architecture else None
    with torch.device("meta"):
        if model_class is not None:
            return model_class(config)
        return transformers.AutoModel.from_config(config)


@dataclass(frozen=True)
class Coverage:
    model_class: str
    entries: tuple[TargetEntry, ...]
    selected: tuple[str, ...]
    params_per_module: int
    selected_parameters: tuple[str, ...] = ()  # target_parameters: the nn.Parameters selected (2 LoRA params each)

    def by_region(self) -> dict[str, int]:
        return dict(sorted(Counter(region_of(name) for name in self.selected).items()))

    def to_dict(self) -> dict[str, object]:
        return {
            "model_class": self.model_class,
            "modules": len(self.selected),
            "params": len(self.selected) * self.params_per_module,
            "regions": {r: {"modules": n, "params": n * self.params_per_module} for r, n in self.by_region().items()},
            "parameters": len(self.selected_parameters),
            "entries": [{"entry": e.entry, "kind": e.kind, "modules": len(e.matched), "note": e.note,
                         "proposal": e.proposal, "corrected": list(e.corrected), "meant": len(e.meant)}
                        for e in self.entries],
        }


def coverage(model: nn.Module, *, target_modules: list[str] | str | None,
             exclude_modules: str | list[str] | None = None, use_dora: bool = False,
             target_parameters: list[str] | None = None) -> Coverage:
    from peft import LoraConfig

    for pattern in [target_modules, exclude_modules]:
        if isinstance(pattern, str):
            try:
                re.compile(pattern)
            except re.error as error:
                raise BadInputError(f"{pattern!r} is not a valid regex ({error}); PEFT fullmatches a string "
                                    "target against each module name") from None
    if isinstance(target_modules, list) and [t.lower() for t in target_modules] == ["all-linear"]:
        target_modules = "all-linear"  # PEFT's shorthand (any case), a string in a LoraConfig
    config = LoraConfig(target_modules=target_modules, exclude_modules=exclude_modules,
                        target_parameters=list(target_parameters) if target_parameters else None)
    shorthand = isinstance(target_modules, str) and target_modules.lower() == "all-linear"
    if shorthand:
        config = expand_all_linear(config, model)
    modules = candidate_modules(model)
    selected = tuple(matches(config, modules)) if target_modules else ()
    parameters = candidate_parameters(model) if target_parameters else None
    entries = entry_table(config, modules, parameters=parameters)
    if shorthand:  # one row for the shorthand, as the user wrote it, not one per layer it expands to
        entries = (TargetEntry("", "default", "all-linear", "all-linear", selected),
                   *(e for e in entries if e.kind == "parameter"))
    return Coverage(type(model).__name__, entries, selected,
                    3 if use_dora else 2,
                    tuple(parameter_matches(target_parameters, parameters)) if parameters is not None else ())


def format_coverage(result: Coverage, source: str) -> str:
    lines = [f"{result.model_class} from {os.path.basename(source)} (meta device, PEFT's matching)", ""]
    for kind, header, unit in (("module", "target_modules entry", "modules"),
                               ("parameter", "target_parameters entry", "params")):
        entries = [e for e in result.entries if (e.kind == "parameter") == (kind == "parameter")]
        if not entries:
            continue
        lines.append(f"  {header:48s} {unit:>8s}")
        for entry in entries:
            lines.append(f"  {entry.entry:48s} {len(entry.matched):8d}")
            if entry.note:
                lines.append(f"      ! {entry.note}")
            if entry.proposal:
                lines.append(f"      checked regex for the whole config: r\"{entry.proposal}\"")
            if entry.corrected:
                corrected = " / ".join(repr(c) for c in entry.corrected)
                lines.append(f"      ? {say('targets.near', 'en', corrected=corrected, count=len(entry.meant))}")
    per = result.params_per_module
    lines += ["", f"Selected: {len(result.selected)} modules, {len(result.selected) * per} LoRA parameters", ""]
    if result.selected_parameters:
        count = len(result.selected_parameters)
        lines[-1:] = [f"Selected by target_parameters: {count} parameters, {count * 2} LoRA parameters", ""]
    lines.append(f"  {'region':48s} {'modules':>8s} {'params':>8s}")
    for region, count in result.by_region().items():
        lines.append(f"  {region:48s} {count:8d} {count * per:8d}")
    return "\n".join(lines)
