"""What discovery keeps of a model from one trace to the next: its structure as names and positions, never a
module or a tensor (a kept module would keep a deleted model alive). A kept layout is used only while the
model has the same modules in the same places, the same classes, the same parameters and the same PEFT
configs; any other change (an adapter added or deleted, a layer replaced, a wrapper unwrapped, a config
edited, parameters re-created by sharding) makes discovery work it out again. Adapter state, requires_grad
and values are never kept: they are read at every trace.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..core.records import TargetEntry
from .peft import SiteLayout, config_on_class


@dataclass(frozen=True)
class Shape:
    """The model as it is now, from a walk that builds no names: enough to tell whether a layout holds."""

    modules: list[nn.Module]  # in named_modules() order
    tree: list[Any]  # per module: its child count, the children's names, their ids (None children too)
    params: list[nn.Parameter]  # every registered parameter slot, module by module (a tied one at each slot)
    slots: list[Any]  # per module: its parameter count and their names
    configs: tuple[tuple[int, tuple[tuple[str, str], ...]], ...]  # (module position, (adapter, repr(config)))


def walk(root: nn.Module) -> tuple[list[nn.Module], list[Any]]:
    """The modules in named_modules() order (pre-order, each once) and the tree itself (which module holds
    which child under which name), without joining a name (joining them is most of named_modules()' cost)."""
    modules: list[nn.Module] = []
    tree: list[Any] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        modules.append(module)
        children = module._modules
        tree.append(len(children))
        if children:
            tree.extend(children)
            tree.extend(map(id, children.values()))
            stack.extend([child for child in reversed(children.values()) if child is not None])
    return modules, tree


def shape_of(modules: list[nn.Module], tree: list[Any]) -> Shape:
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
    module_ids: list[int]
    module_refs: list[weakref.ref[nn.Module]]
    types: list[type]
    tree: list[Any]
    param_ids: list[int]
    param_refs: list[weakref.ref[nn.Parameter]]
    slots: list[Any]
    configs: tuple[Any, ...]

    def holds_for(self, shape: Shape) -> bool:
        ids = list(map(id, shape.modules))
        if ids != self.module_ids or shape.tree != self.tree or shape.configs != self.configs:
            return False
        param_ids = list(map(id, shape.params))
        if param_ids != self.param_ids or shape.slots != self.slots:
            return False
        if list(map(type, shape.modules)) != self.types:
            return False
        # the same ids are the same objects only while the kept ones are alive (a freed id can be reused)
        return [id(r()) for r in self.module_refs] == ids and [id(r()) for r in self.param_refs] == param_ids


_KEPT: weakref.WeakKeyDictionary[nn.Module, _Kept] = weakref.WeakKeyDictionary()


def kept_layout(root: nn.Module, shape: Shape) -> Layout | None:
    """The layout kept from an earlier trace of `root`, if the model still has that structure."""
    kept = _KEPT.get(root)
    return kept.layout if kept is not None and kept.holds_for(shape) else None


def keep_layout(root: nn.Module, shape: Shape, layout: Layout) -> None:
    try:
        _KEPT[root] = _Kept(layout, list(map(id, shape.modules)), [weakref.ref(m) for m in shape.modules],
                            list(map(type, shape.modules)), shape.tree, list(map(id, shape.params)),
                            [weakref.ref(p) for p in shape.params], shape.slots, shape.configs)
    except TypeError:  # a module or tensor that takes no weak reference: work it out at every trace
        _KEPT.pop(root, None)


def forget_layouts() -> None:
    """Drop every kept layout (tests; a user never needs it)."""
    _KEPT.clear()
