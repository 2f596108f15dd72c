"""target_modules / target_parameters coverage with PEFT's own matching: what each entry selects, and why not.

PEFT matches a list entry as an exact module name or a `.`-suffix, and a string with `re.fullmatch` on
the full name; `exclude_modules`, `layers_to_transform` / `layers_pattern` and `modules_to_save` filter
that. We call PEFT's `check_target_module_exists` entry by entry, so the table is what PEFT would do.
For target_parameters PEFT has no matching function (the loop sits inside `BaseTuner._inject_parameters`),
so `candidate_parameters` / `parameter_matches` replicate it; see their docstrings.

An entry that matches nothing gets near-miss suggestions (`near_misses`): real names whose suffix it most
likely meant, each confirmed with PEFT's matching before it is proposed.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable

from torch import nn

from ..core.records import TargetEntry
from .near_miss import near_misses

_SUPPORTED = {"Linear", "Conv1d", "Conv2d", "Conv3d", "Embedding", "MultiheadAttention", "Conv1D"}
_GLOB = re.compile(r"[*?\[\]]")  # a wildcard or regex attempt in a list entry, which PEFT takes literally


def candidate_modules(base: nn.Module | list[tuple[str, nn.Module]]) -> dict[str, str]:
    """Module name -> layer type, for the modules LoRA can adapt (adapter wrappers count as their base).

    `base` is a model, or its (name, module) pairs in named_modules() order."""
    from .peft import is_adapter_layer

    found: dict[str, str] = {}
    inside = None  # the LoRA layer being walked: named_modules() lists its sub-modules right after it
    for name, module in base.named_modules() if isinstance(base, nn.Module) else base:
        if inside is not None and name.startswith(inside):
            continue
        if is_adapter_layer(module):
            found[name] = type(module.get_base_layer()).__name__
            inside = name + "."
        elif type(module).__name__ in _SUPPORTED:
            found[name] = type(module).__name__
    return found


def matches(config: object, names: Iterable[str]) -> list[str]:
    """The names PEFT's matching selects for this config (exclusions applied)."""
    from peft.tuners.tuners_utils import _ExcludedModule, check_target_module_exists

    selected = []
    for name in names:
        hit = check_target_module_exists(config, name)
        if hit and not isinstance(hit, _ExcludedModule):
            selected.append(name)
    return selected


def entry_table(config: object, modules: dict[str, str], *, prefix: str = "", adapter: str = "default",
                parameters: dict[str, bool] | None = None) -> tuple[TargetEntry, ...]:
    """One row per target_modules entry, then one per target_parameters entry (when `parameters`, the
    `candidate_parameters` of the same model, is given): what PEFT matches with it alone, a working form
    for a glob, and checked near misses for an entry that matches nothing."""
    full = (lambda name: f"{prefix}.{name}") if prefix else (lambda name: name)
    rows = []
    targets = getattr(config, "target_modules", None)
    if isinstance(targets, str):
        kind = "all-linear" if targets.lower() == "all-linear" else "regex"
        rows.append(TargetEntry(prefix, adapter, targets, kind, tuple(full(n) for n in matches(config, modules))))
    elif targets:
        pool = {n: t for n, t in modules.items() if t in _SUPPORTED}  # what a suggestion may name
        for entry in sorted(targets):
            single = copy.copy(config)
            single.target_modules = {entry}
            matched = tuple(full(n) for n in matches(single, modules))
            note = proposal = None
            corrected: tuple[str, ...] = ()
            meant: tuple[str, ...] = ()
            if not matched and _GLOB.search(entry):
                note = ("list entries match exact module names or name suffixes after a '.'; '*' is no wildcard "
                        "there and a list entry is no regex")
                proposal = combined_regex(config, modules) or _verified_regex(entry, config, modules)
                if proposal:
                    single.target_modules = glob_to_regex(entry)
                    meant = tuple(full(n) for n in matches(single, modules))
            elif not matched:
                corrected, names = _checked(entry, pool, lambda fix, names: _module_check(config, fix, names))
                meant = tuple(full(n) for n in names)
            rows.append(TargetEntry(prefix, adapter, entry, "name", matched, note, proposal, corrected, meant))
    if parameters is not None:
        for entry in sorted(getattr(config, "target_parameters", None) or ()):
            matched = tuple(full(n) for n in parameter_matches({entry}, parameters))
            corrected, names = ((), ()) if matched else _checked(
                entry, parameters, lambda fix, names: parameter_matches({fix}, {n: parameters[n] for n in names}))
            rows.append(TargetEntry(prefix, adapter, entry, "parameter", matched, corrected=corrected,
                                    meant=tuple(full(n) for n in names)))
    return tuple(rows)


def _module_check(config: object, fix: str, names: list[str]) -> list[str]:
    single = copy.copy(config)
    single.target_modules = {fix}
    return matches(single, names)


def _checked(entry: str, pool: Iterable[str], check) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The near misses of `entry` among `pool` that `check(fix, names)` (PEFT's matching) confirms select
    something: (corrected entries, the names they select)."""
    corrected, selected = [], set()
    for fix, names in near_misses(entry, pool):
        confirmed = check(fix, names)
        if confirmed:
            corrected.append(fix)
            selected.update(confirmed)
    return tuple(corrected), tuple(sorted(selected))


# --- target_parameters: PEFT's matching, replicated -------------------------------------------------------


def strip_base_layer(name: str) -> str:
    """PEFT's `strip_base_layer_from_name` (a closure in `BaseTuner._inject_parameters`), copied."""
    while ".base_layer" in name:
        head, _, tail = name.rpartition(".base_layer")
        name = head + tail
    return name


def candidate_parameters(base: nn.Module | list[tuple[str, nn.Module]]) -> dict[str, bool]:
    """The parameter names PEFT's target_parameters matching compares entries with, as it would see them
    injecting into the unwrapped model: name -> whether a `.`-suffix match counts.

    Replicates `BaseTuner._inject_parameters` (peft 0.17-0.21): for each module, `f"{module}.{param}"` over
    `named_parameters(recurse=False)`, with `.base_layer` removed from the module name, suffix matches
    allowed; a module holding `parametrizations` offers those names for exact matches only. Unlike PEFT,
    which sees the model before injection, this walks a model that may already be wrapped, so adapter
    sub-modules (everything below a tuner layer except its `base_layer`) and parametrization internals
    are skipped, and parameters on the top-level module are left out (PEFT raises for them)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    found: dict[str, bool] = {}
    hidden: set[str] = set()  # adapter sub-modules and parametrization lists: not the model's own
    for name, module in base.named_modules() if isinstance(base, nn.Module) else base:
        if any(name[:i] in hidden for i in range(len(name)) if name[i] == "."):
            continue
        if isinstance(module, BaseTunerLayer):
            hidden.update(f"{name}.{child}" for child, _ in module.named_children() if child != "base_layer")
        if hasattr(module, "parametrizations"):
            hidden.add(f"{name}.parametrizations")
            for param_name in module.parametrizations:
                found[f"{name}.{param_name}"] = False
        if not name:
            continue
        unwrapped = strip_base_layer(name)
        for param_name, _ in module.named_parameters(recurse=False):
            found.setdefault(f"{unwrapped}.{param_name}", True)
    return found


def parameter_matches(targets: Iterable[str], parameters: dict[str, bool]) -> list[str]:
    """The names PEFT's target_parameters matching selects: the name itself, or (where allowed) a name
    ending in `.` + the entry. PEFT applies no exclude_modules / layers_to_transform here."""
    wanted = set(targets)
    return [key for key, suffix in parameters.items()
            if key in wanted or (suffix and any(key.endswith(f".{t}") for t in wanted))]


# --- near misses ------------------------------------------------------------------------------------------

def glob_to_regex(entry: str) -> str:
    """`audio_tower.*.self_attn.q_proj` -> a regex PEFT fullmatches against the full module name."""
    parts = re.split(r"(\*|\?)", entry)
    body = "".join(".*" if p == "*" else "." if p == "?" else re.escape(p) for p in parts)
    return rf"(.*\.)?{body}"


def _verified_regex(entry: str, config: object, modules: dict[str, str]) -> str | None:
    candidate = copy.copy(config)
    candidate.target_modules = glob_to_regex(entry)
    return candidate.target_modules if matches(candidate, modules) else None


def combined_regex(config: object, modules: dict[str, str]) -> str | None:
    """One regex selecting what the valid list entries select plus what the globs meant, checked by PEFT."""
    targets = getattr(config, "target_modules", None)
    if not targets or isinstance(targets, str):
        return None
    alternatives = []
    for entry in sorted(targets):
        if _GLOB.search(entry):
            alternatives.append(glob_to_regex(entry)[len(r"(.*\.)?"):])
        else:
            alternatives.append(re.escape(entry))
    regex = rf"(.*\.)?({'|'.join(alternatives)})"
    candidate = copy.copy(config)
    candidate.target_modules = regex
    intended = set()
    for entry in targets:
        single = copy.copy(config)
        single.target_modules = {entry} if not _GLOB.search(entry) else glob_to_regex(entry)
        intended |= set(matches(single, modules))
    return regex if set(matches(candidate, modules)) == intended and intended else None


def exact_target_regex(selected: Iterable[str], modules: dict[str, str], config: object) -> str | None:
    """A compact regex that PEFT's matching confirms selects exactly `selected` among `modules`.

    Layer indices become `\\d+` and leaf names are grouped by their common stem; when the compact form
    over-selects (some layers were not run), the exact names are alternated instead. None if even that
    does not check out.
    """
    wanted = set(selected)
    if not wanted:
        return None
    groups: dict[str, set[str]] = {}
    for name in sorted(wanted):
        stem, _, leaf = re.sub(r"\.\d+\.", r".<i>.", name).partition(".<i>.")
        groups.setdefault(stem, set()).add(leaf)
    index = re.escape("<i>")
    compact = "|".join(
        re.escape(stem) + (r"\.\d+\.(" + "|".join(re.escape(leaf).replace(index, r"\d+") for leaf in sorted(leaves))
                           + ")" if leaves != {""} else "")
        for stem, leaves in sorted(groups.items())
    )
    for regex in (compact, "|".join(re.escape(n) for n in sorted(wanted))):
        candidate = copy.copy(config)
        candidate.target_modules = f"({regex})"
        candidate.layers_to_transform = None
        if set(matches(candidate, modules)) == wanted:
            return candidate.target_modules
    return None


_LINEAR = {"Linear", "Conv1D"}


def suggest_target_modules(base_model: nn.Module, ran: Iterable[str], *, config: object = None) -> str | None:
    """A target_modules regex that PEFT's matching confirms selects exactly the linear layers in `ran`.

    `base_model` is the model PEFT wraps (`peft_model.get_base_model()`); `ran` holds module names relative
    to it (what a traced step ran through). The model's output embedding (lm_head) is never suggested.
    """
    from peft import LoraConfig

    named = list(base_model.named_modules())
    output = getattr(base_model, "get_output_embeddings", lambda: None)()
    head = {name for name, module in named if output is not None and module is output}
    modules = {n: t for n, t in candidate_modules(named).items() if t in _LINEAR and n not in head}
    wanted = [n for n in ran if n in modules]
    return exact_target_regex(wanted, modules, config if config is not None else LoraConfig(target_modules="x"))
