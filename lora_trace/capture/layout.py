"""What discovery keeps of a model from one trace to the next: its structure as names and positions, never a
module or a tensor (a kept module would keep a deleted model alive). A layout is a function of the model's
shape: its classes, which module holds which child under which name, which parameter sits in which slot
under which name, which modules and parameters are one and the same object, and the PEFT configs. It is
used only while all of that is unchanged; any change (an adapter added or deleted, a layer replaced or
moved, a wrapper unwrapped, a config edited, parameters re-created by sharding) makes discovery work it out
again. Adapter state, requires_grad and values are never kept: they are read at every trace. Object ids
are compared only as a pattern (which positions hold the same object): a reused id of a freed module in an
identical shape gives the identical layout, so no weak reference per module is needed.
"""

from __future__ import annotations

import operator
import weakref
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain, compress, count, repeat
from operator import attrgetter
from typing import Any

from torch import nn

from ..core.records import TargetEntry
from .peft import SiteLayout, config_on_class

_MODULES, _PARAMETERS, _DICT = attrgetter("_modules"), attrgetter("_parameters"), attrgetter("__dict__")


@dataclass(frozen=True)
class Shape:
    """The model as it is now, from a walk that builds no names: enough to tell whether a layout holds."""

    modules: list[nn.Module]  # breadth first, each once (named_modules() lists the same ones, depth first)
    types: list[type]  # each module's class
    tree: tuple[list[str], array, array]  # every child's name; each module's child count; the children's ids
    params: list[nn.Parameter | None]  # every parameter slot, module by module (None: an empty slot)
    slots: tuple[list[str], array]  # every slot's name; each module's slot count
    configs: tuple[tuple[int, tuple[tuple[str, str], ...]], ...]  # (module position, (adapter, repr(config)))


def walk(root: nn.Module) -> Shape:
    """The model's shape, level by level: each level is read by a few maps that run in C, since a Python loop
    per module was most of the cost of a trace on a model of thousands of modules. A module held twice (shared,
    or a cycle back to an ancestor) is listed once, as named_modules() lists it."""
    modules: list[nn.Module] = []
    names: list[str] = []
    counts, ids, slot_counts = array("Q"), array("Q"), array("Q")
    params: list[nn.Parameter | None] = []
    slot_names: list[str] = []
    seen = {id(root)}
    level = [root]
    while level:
        modules += level
        held = list(map(_MODULES, level))
        counts.extend(map(len, held))
        names += chain.from_iterable(held)
        children = list(chain.from_iterable(map(dict.values, held)))
        ids.extend(map(id, children))  # None children too: id(None)
        own = list(map(_PARAMETERS, level))
        slot_counts.extend(map(len, own))
        slot_names += chain.from_iterable(own)
        params += chain.from_iterable(map(dict.values, own))
        level = [child for child in children if child is not None]
        keys = set(map(id, level))
        if len(keys) < len(level) or not seen.isdisjoint(keys):  # a module held twice: list it once
            fresh = {id(child): child for child in level}
            level = [child for key, child in fresh.items() if key not in seen]
            keys = set(fresh) - seen
        seen |= keys
    types = list(map(type, modules))
    return Shape(modules, types, (names, counts, ids), params, (slot_names, slot_counts), _configs(modules, types))


def own_attribute(modules: list[nn.Module], name: str) -> Iterator[bool]:
    """Whether each module's own __dict__ holds `name`, read by maps that run in C (thousands of modules)."""
    return map(operator.contains, map(_DICT, modules), repeat(name))


def _configs(modules: list[nn.Module], types: list[type]) -> tuple[tuple[int, tuple[tuple[str, str], ...]], ...]:
    """Each module holding PEFT configs and their text (an edited config changes the layout)."""
    on_class = {cls for cls in set(types) if config_on_class(cls)}
    holders = list(compress(count(), own_attribute(modules, "peft_config")))
    if on_class:
        holders = sorted(set(holders) | {at for at, cls in enumerate(types) if cls in on_class})
    found = []
    for at in holders:
        config = getattr(modules[at], "peft_config", None)
        if isinstance(config, dict):
            found.append((at, tuple((str(adapter), repr(c)) for adapter, c in config.items())))
    return tuple(found)


@dataclass(frozen=True)
class Layout:
    """Discovery's structural answers: modules as positions in named_modules() order (`order` finds each in
    the walk's list), parameters as positions in the walk's slots."""

    names: tuple[str, ...]  # clean name of each module
    lora: tuple[int, ...]  # adapter layers of the tuners lora-trace reasons about
    sites: tuple[SiteLayout, ...]  # one per `lora` layer, same order
    regions: tuple[tuple[str, int], ...]
    tuners: tuple[tuple[str, int], ...]  # base-model prefix -> the PEFT tuner's position
    targets: tuple[TargetEntry, ...]
    unsupported: tuple[tuple[str, int], ...]
    base: tuple[tuple[str, int], ...]  # (qualified name, position) of base parameters not to be left trainable
    enclosing: tuple[int, ...]  # modules with a forward of their own enclosing an adapter layer, by name
    holders: tuple[int, ...]  # modules that are or hold an adapter layer lora-trace reasons about, model order
    unique: tuple[int, ...]  # the first slot of each parameter, in model order
    configured: tuple[int, ...]  # modules holding PEFT configs
    adaptable: tuple[tuple[str, int], ...]  # layers a tuner could adapt but does not (deep mode watches them)
    order: array  # where each module (in `names` order) sits in the walk's list


@dataclass(frozen=True)
class _Kept:
    layout: Layout
    module_ids: array
    types: list[type]
    tree: tuple[list[str], array, array]
    param_ids: array
    slots: tuple[list[str], array]
    configs: tuple[Any, ...]
    sites: dict[Any, Any] = field(default_factory=dict)  # the state records of read_sites and zeros_at_start

    def holds_for(self, shape: Shape) -> bool:
        return (array("Q", map(id, shape.modules)) == self.module_ids and shape.tree == self.tree
                and shape.configs == self.configs and array("Q", map(id, shape.params)) == self.param_ids
                and shape.slots == self.slots and shape.types == self.types)


_KEPT: weakref.WeakKeyDictionary[nn.Module, _Kept] = weakref.WeakKeyDictionary()


def kept_layout(root: nn.Module, shape: Shape) -> tuple[Layout, dict[Any, Any]] | None:
    """The layout kept from an earlier trace of `root`, if the model still has that shape, and the memo of
    the adapter state read at the last trace (records reused where the state reads the same)."""
    kept = _KEPT.get(root)
    return (kept.layout, kept.sites) if kept is not None and kept.holds_for(shape) else None


def keep_layout(root: nn.Module, shape: Shape, layout: Layout) -> dict[Any, Any]:
    kept = _KEPT[root] = _Kept(layout, array("Q", map(id, shape.modules)), shape.types, shape.tree,
                               array("Q", map(id, shape.params)), shape.slots, shape.configs)
    return kept.sites


def forget_layouts() -> None:
    """Drop every kept layout (tests; a user never needs it)."""
    _KEPT.clear()
