"""Facts derived once from a Trace, shared by the checks. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..core.records import LoraSite, ModuleCall, Trace
from ..core.regions import short_name


@dataclass(frozen=True)
class Facts:
    trace: Trace

    @cached_property
    def sites(self) -> dict[str, LoraSite]:
        return {site.module: site for site in self.trace.sites}

    @cached_property
    def trainable(self) -> frozenset[str]:
        return frozenset(p for site in self.trace.sites for p in site.trainable_params)

    @cached_property
    def arrived(self) -> frozenset[str]:
        return frozenset(a.param for a in self.trace.arrivals)

    @cached_property
    def got_grad(self) -> frozenset[str] | None:
        """LoRA parameters that got (or, before backward, would get) a gradient; None when unknowable."""
        if self.trace.backward:
            return self.arrived
        reach = self.trace.reachability
        if reach is not None and not reach.opaque:
            return frozenset(reach.params)
        return None

    @cached_property
    def starved(self) -> frozenset[str]:
        """Trainable LoRA parameters that got no gradient: what every error finding must explain."""
        got = self.got_grad
        return frozenset() if got is None else self.trainable - got

    @cached_property
    def calls(self) -> dict[str, list[ModuleCall]]:
        table: dict[str, list[ModuleCall]] = {}
        for call in self.trace.calls:
            table.setdefault(call.module, []).append(call)
        return table

    def starved_sites(self) -> list[LoraSite]:
        return [s for s in self.trace.sites if any(p in self.starved for p in s.trainable_params)]

    @cached_property
    def traversed_regions(self) -> tuple[str, ...]:
        """Regions that ran, most specific only (a region that contains another that ran is dropped)."""
        run = self.trace.regions_run
        return tuple(r for r in run if not any(o != r and o.startswith(r + ".") for o in run))


def names(items: list[str] | tuple[str, ...] | set[str], limit: int = 4) -> str:
    """`a, b, c and 5 more`, with PEFT's wrapper chain shortened, for messages."""
    shown = [short_name(i) for i in sorted(items)]
    if len(shown) <= limit:
        return ", ".join(shown)
    return ", ".join(shown[:limit]) + f" and {len(shown) - limit} more"
