"""The results of `lora-trace inspect` (records, JSON, text), apart from the reading in `saved_adapter`.

Records hold names and numbers, never arrays, so a result is cheap to keep, compare and print.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_LIST_AT_MOST = 20  # name each tensor or layer when a group is this small; otherwise counts only


@dataclass(frozen=True, slots=True)
class LoraLayer:
    """One wrapped module of the adapter and what its saved tensors show."""

    module: str  # without PEFT's `base_model.model.` prefix
    region: str
    kind: str  # last name component of the wrapped module: q_proj, fc1, embed_tokens
    tensors: tuple[str, ...]  # saved keys of its LoRA tensors, sorted
    numel: int
    still_zero: bool | None  # its zero-initialised factor is still all zero; None: the test does not apply


@dataclass(frozen=True)
class AdapterReport:
    """What `inspect_adapter` read and concluded. verdict: all-trained | some-never-trained | unknown."""

    path: str
    peft_type: str
    config: dict[str, object]
    dtypes: tuple[str, ...]
    layers: tuple[LoraLayer, ...]
    other_tensors: tuple[str, ...]  # modules_to_save copies, saved embeddings, non-LoRA PEFT tensors
    zero_test_reason: str | None  # why the zero test does not apply; None when it does

    @property
    def untrained(self) -> tuple[LoraLayer, ...]:
        return tuple(layer for layer in self.layers if layer.still_zero)

    @property
    def verdict(self) -> str:
        if self.zero_test_reason is not None or not self.layers:
            return "unknown"
        return "some-never-trained" if self.untrained else "all-trained"

    @property
    def ok(self) -> bool:
        """False only on evidence: "unknown" is not a failure, the text says it could not tell."""
        return self.verdict != "some-never-trained"

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def regions(self) -> list[dict[str, object]]:
        """Per region: its layers, the untrained ones by module kind, and their LoRA parameter count."""
        out = []
        for region in sorted({layer.region for layer in self.layers}):
            mine = [layer for layer in self.layers if layer.region == region]
            bad = [layer for layer in mine if layer.still_zero]
            kinds: dict[str, int] = {}
            for layer in bad:
                kinds[layer.kind] = kinds.get(layer.kind, 0) + 1
            out.append({"region": region, "layers": len(mine), "untrained_layers": len(bad),
                        "untrained_parameters": sum(len(layer.tensors) for layer in bad),
                        "untrained_kinds": dict(sorted(kinds.items()))})
        return out

    def to_dict(self) -> dict[str, object]:
        bad = self.untrained
        return {"kind": "lora-trace.adapter-inspection", "version": 1, "path": self.path,
                "peft_type": self.peft_type, "config": self.config, "dtypes": list(self.dtypes),
                "zero_test": {"applies": self.zero_test_reason is None, "reason": self.zero_test_reason},
                "verdict": self.verdict, "layers": len(self.layers),
                "lora_parameters": sum(len(layer.tensors) for layer in self.layers),
                "untrained_layers": len(bad), "untrained_parameters": sum(len(layer.tensors) for layer in bad),
                "untrained_numel": sum(layer.numel for layer in bad), "regions": self.regions(),
                "untrained": [layer.module for layer in bad], "other_tensors": list(self.other_tensors)}

    def __str__(self) -> str:
        return format_inspection(self)


@dataclass(frozen=True, slots=True)
class TensorChange:
    """One tensor present in both checkpoints. rel_change is None when `before` was all zero and `after` not,
    or a value was not finite."""

    key: str
    region: str
    kind: str  # the module's last name component (q_proj), or the key's for a non-module tensor
    role: str  # lora_A, lora_B, lora_magnitude_vector, ...; for other tensors the last key component
    changed: bool
    rel_change: float | None  # ||after - before|| / ||before||
    max_abs_diff: float | None  # None: not finite (NaN or inf in a checkpoint)


@dataclass(frozen=True)
class AdapterChanges:
    """What `compare_adapters` found between two checkpoints of one run, plus the later one's inspection."""

    before: str
    after: str
    changes: tuple[TensorChange, ...]
    shape_changed: tuple[str, ...]
    only_before: tuple[str, ...]
    only_after: tuple[str, ...]
    config_differences: dict[str, list[object]] = field(default_factory=dict)
    after_report: AdapterReport | None = None

    @property
    def unchanged(self) -> tuple[str, ...]:
        return tuple(change.key for change in self.changes if not change.changed)

    @property
    def ok(self) -> bool:
        return not self.unchanged and (self.after_report is None or self.after_report.ok)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, object]:
        return {"kind": "lora-trace.adapter-changes", "version": 1, "before": self.before, "after": self.after,
                "compared": len(self.changes), "changed": [
                    {"tensor": c.key, "rel_change": c.rel_change, "max_abs_diff": c.max_abs_diff}
                    for c in self.changes if c.changed],
                "unchanged": list(self.unchanged), "shape_changed": list(self.shape_changed),
                "only_before": list(self.only_before), "only_after": list(self.only_after),
                "config_differences": self.config_differences,
                "after_inspection": self.after_report.to_dict() if self.after_report else None}

    def __str__(self) -> str:
        return format_changes(self)


def format_inspection(report: AdapterReport) -> str:
    """The plain-text report of one saved adapter: what was read, the verdict, the groups, what it means."""
    config = ", ".join(f"{key}={value}" for key, value in report.config.items()
                       if key in ("r", "lora_alpha", "init_lora_weights", "use_dora"))
    parameters = sum(len(layer.tensors) for layer in report.layers)
    lines = [f"Saved adapter: {report.path}",
             f"  read adapter_config.json and adapter_model.safetensors ({report.peft_type}"
             f"{', ' + config if config else ''}; dtype {', '.join(report.dtypes) or 'none'})",
             f"  {len(report.layers)} LoRA layers with {parameters} LoRA parameters; "
             f"{len(report.other_tensors)} other tensors"
             + (" (modules_to_save copies, saved embeddings)" if report.other_tensors else "")]
    verdict = report.verdict
    if verdict == "unknown" and report.zero_test_reason is None:
        lines.append("No LoRA layer in this adapter: there is nothing to test.")
    elif verdict == "unknown":
        lines += [f"Cannot tell from one checkpoint: {report.zero_test_reason}.",
                  "Give two checkpoints of this run (lora-trace inspect EARLIER_DIR LATER_DIR) to see which "
                  "tensors changed."]
    elif verdict == "all-trained":
        lines.append(f"All trained: each of the {len(report.layers)} LoRA layers has a non-zero {_factor(report)}, "
                     "so each received at least one update.")
    else:
        lines += _untrained_lines(report)
    untested = sum(layer.still_zero is None for layer in report.layers)
    if untested and report.zero_test_reason is None:
        lines.append(f"Not tested: {untested} layers without a lora_B tensor in the file.")
    return "\n".join(lines)


def _factor(report: AdapterReport) -> str:
    embeddings = any(".lora_embedding_A" in key for layer in report.layers for key in layer.tensors)
    return "lora_B (embeddings: lora_embedding_A)" if embeddings else "lora_B"


def _untrained_lines(report: AdapterReport) -> list[str]:
    bad = report.untrained
    parameters = sum(len(layer.tensors) for layer in bad)
    lines = [f"Never trained: {len(bad)} of {len(report.layers)} LoRA layers still have {_factor(report)} all "
             "zero, its initial value."]
    for group in report.regions():
        kinds = ", ".join(f"{kind} {count}" for kind, count in group["untrained_kinds"].items())
        lines.append(f"  {group['region']}: {group['untrained_layers']} of {group['layers']} layers never trained"
                     + (f" ({kinds})" if kinds else ""))
    if len(bad) <= _LIST_AT_MOST:
        lines += [f"    {layer.module}" for layer in bad]
    which = "both LoRA factors of each" if parameters == 2 * len(bad) else "every LoRA tensor of each"
    lines += [f"{parameters} LoRA parameters belong to these layers ({which}): while lora_B is zero the "
              "layer's low-rank update is zero and its lora_A gets no gradient either.",
              "Likely meaning: these layers received no gradient during training, or their updates were lost "
              "(frozen, left out of the optimizer, run under no_grad or bypassed), or the adapter was saved before "
              "the first optimizer step.",
              "To find why, trace one training step: `lora-trace run -- python train.py ...` (the script unchanged), "
              "lora_trace.diagnose(model, step), or `with lora_trace.trace(model, optimizer=opt): ...`."]
    return lines


def format_changes(changes: AdapterChanges) -> str:
    """The plain-text report of two checkpoints: per group, how many tensors changed and by how much."""
    moved = [c for c in changes.changes if c.changed]
    still = [c for c in changes.changes if not c.changed]
    lines = [f"Two checkpoints compared: {changes.before} -> {changes.after}",
             f"  {len(changes.changes)} tensors in both: {len(moved)} changed, {len(still)} unchanged"]
    if moved:
        lines.append(f"Changed ({len(moved)}): relative change ||after - before|| / ||before||, "
                     "by region, module kind and tensor:")
        lines += _groups(moved, with_change=True)
    if still:
        lines.append(f"Unchanged ({len(still)}): no update between the two checkpoints:")
        lines += _groups(still, with_change=False)
        if len(still) <= _LIST_AT_MOST:
            lines += [f"    {c.key}" for c in still]
    elif moved:
        lines.append("Every tensor in both checkpoints changed.")
    for title, keys in (("Only in before", changes.only_before), ("Only in after", changes.only_after),
                        ("Different shapes, not compared", changes.shape_changed)):
        if keys:
            lines.append(f"{title} ({len(keys)}):")
            lines += [f"    {key}" for key in keys[:_LIST_AT_MOST]]
            lines += [f"    ... and {len(keys) - _LIST_AT_MOST} more"] if len(keys) > _LIST_AT_MOST else []
    lines += [f"Config differs: {key} {a} -> {b}" for key, (a, b) in changes.config_differences.items()]
    if changes.after_report is not None:
        after = changes.after_report
        lines.append(f"The later checkpoint alone: {after.verdict}"
                     + (f" ({len(after.untrained)} of {len(after.layers)} LoRA layers with lora_B still zero)"
                        if after.verdict == "some-never-trained" else ""))
    return "\n".join(lines)


def _groups(items: list[TensorChange], *, with_change: bool) -> list[str]:
    groups: dict[tuple[str, str, str], list[TensorChange]] = {}
    for item in items:
        groups.setdefault((item.region, item.kind, item.role), []).append(item)
    lines = []
    for (region, kind, role), members in sorted(groups.items()):
        line = f"  {region or '(root)'}  {kind} {role} ({len(members)})"
        if with_change:
            rels = sorted(c.rel_change for c in members if c.rel_change is not None)
            parts = [f"{rels[0]:.3g}" + (f" to {rels[-1]:.3g}" if rels[-1] != rels[0] else "")] if rels else []
            if len(rels) < len(members):
                parts.append(f"{len(members) - len(rels)} from zero or not finite (no ratio)")
            diffs = [c.max_abs_diff for c in members if c.max_abs_diff is not None]
            parts += [f"max abs diff {max(diffs):.3g}"] if diffs else []
            line += ": " + ", ".join(parts)
        lines.append(line)
    return lines
