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

import weakref
from array import array
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..core.records import TargetEntry
from .peft import SiteLayout, config_on_class


@dataclass(frozen=True)
class Shape:
    """The model as it is now, from a walk that builds no names: enough to tell whether a layout holds."""

    modules: list[nn.Module]  # in named_modules() order
    tree: tuple[list[str], array]  # per module: its children's names; its child count and the children's ids
    params: list[nn.Parameter]  # every registered parameter slot, module by module (a tied one at each slot)
    slots: list[Any]  # per module: its parameters' names and their count
    configs: tuple[tuple[int, tuple[tuple[str, str], ...]], ...]  # (module position, (adapter, repr(config)))


def walk(root: nn.Module) -> tuple[list[nn.Module], tuple[list[str], array]]:
    """The modules in named_modules() order (pre-order, each once) and the tree itself (which module holds
    which child under which name), without joining a name (joining them is most of named_modules()' cost)."""
    modules: list[nn.Module] = []
    keys: list[str] = []
    ids = array("Q")
    seen: set[int] = set()
    stack = [root]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        modules.append(module)
        children = module._modules
        ids.append(len(children))
        if children:
            keys.extend(children)
            ids.extend(map(id, children.values()))  # None children too: id(None)
            stack.extend([child for child in reversed(children.values()) if child is not None])
    return modules, (keys, ids)


def shape_of(modules: list[nn.Module], tree: tuple[list[str], array]) -> Shape:
    params: list[nn.Parameter] = []
    slots: list[Any] = []
    configs = []
    for at, module in enumerate(modules):
        own = module._parameters
        count = len(params)
        for key, param in own.items():
            if param is not None:
                params.append(param)
                slots.append(key)
        slots.append(len(params) - count)
        if "peft_config" in module.__dict__ or config_on_class(type(module)):
            config = getattr(module, "peft_config", None)
            if isinstance(config, dict):
                configs.append((at, tuple((str(adapter), repr(c)) for adapter, c in config.items())))
    return Shape(modules, tree, params, slots, tuple(configs))


@dataclass(frozen=True)
class Layout:
    """Discovery's structural answers; modules and parameters as positions in the `Shape` they came from."""

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
    unique: tuple[int, ...]  # the first slot of each parameter


@dataclass(frozen=True)
class _Kept:
    layout: Layout
    module_ids: array
    types: list[type]
    tree: tuple[list[str], array]
    param_ids: array
    slots: list[Any]
    configs: tuple[Any, ...]
    sites: dict[int, Any] = field(default_factory=dict)  # read_sites' memo: no tensor, no module

    def holds_for(self, shape: Shape) -> bool:
        return (array("Q", map(id, shape.modules)) == self.module_ids and shape.tree == self.tree
                and shape.configs == self.configs and array("Q", map(id, shape.params)) == self.param_ids
                and shape.slots == self.slots and list(map(type, shape.modules)) == self.types)


_KEPT: weakref.WeakKeyDictionary[nn.Module, _Kept] = weakref.WeakKeyDictionary()


def kept_layout(root: nn.Module, shape: Shape) -> tuple[Layout, dict[int, Any]] | None:
    """The layout kept from an earlier trace of `root`, if the model still has that shape, and the memo of
    the adapter state read at the last trace (records reused where the state reads the same)."""
    kept = _KEPT.get(root)
    return (kept.layout, kept.sites) if kept is not None and kept.holds_for(shape) else None


def keep_layout(root: nn.Module, shape: Shape, layout: Layout) -> dict[int, Any]:
    kept = _KEPT[root] = _Kept(layout, array("Q", map(id, shape.modules)), list(map(type, shape.modules)),
                               shape.tree, array("Q", map(id, shape.params)), shape.slots, shape.configs)
    return kept.sites


def forget_layouts() -> None:
    """Drop every kept layout (tests; a user never needs it)."""
    _KEPT.clear()
