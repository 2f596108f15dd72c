"""The GPU check (issue 16): one prepared script for a CUDA machine, such as the device tool's H200.

    python -m benchmarks.gpu_check --out DIR            # on the GPU machine; --device cpu --quick to smoke-test

1. Verdicts: planted bugs on a tiny Qwen2 + LoRA get the same findings on CUDA as on the CPU, and `diagnose()`
   leaves weights, `.grad` and the CUDA RNG bit-identical.
2. Synchronisations: `torch.cuda.set_sync_debug_mode("warn")` counts the device syncs of a plain step, a traced
   step and a deep-traced step, at 16 and 320 LoRA modules. Gradient norms stay on the device until the step
   ends, so the count must not grow with the number of LoRA parameters.
3. Overhead: traced and deep-traced step against a plain step. These are medians of interleaved rounds, with
   the clock read after `torch.cuda.synchronize()`. Both statistics are kept: the ratio of medians and the
   median of per-round ratios.

It writes DIR/gpu.json and prints a markdown summary.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import lora_trace

# -- 1. verdicts -------------------------------------------------------------------------------------------


def _tiny(device: str, *, targets: tuple[str, ...] = ("q_proj", "v_proj"), dropout: float = 0.0) -> nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=64)
    model = get_peft_model(Qwen2ForCausalLM(config), LoraConfig(r=4, target_modules=list(targets),
                                                                lora_dropout=dropout))
    return model.to(device)


def _ids(device: str) -> torch.Tensor:
    return torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0)).to(device)


def _case(name: str, device: str) -> list[tuple[str, str]]:
    """(code, severity) of every finding for one planted case."""
    ids = _ids(device)
    deep = name == "detach"
    if name in ("no-grad-region", "detach"):
        model = nn.ModuleDict({"lm": _tiny(device), "head": nn.Linear(64, 1)}).to(device)
        with lora_trace.trace(model, deep=deep) as t:
            if name == "no-grad-region":
                with torch.no_grad():
                    logits = model["lm"](input_ids=ids).logits
            else:
                logits = model["lm"](input_ids=ids).logits.detach()
            model["head"](logits).sum().backward()
        return [(f.code, f.severity) for f in t.diagnosis.findings]
    model = _tiny(device, targets=("q_proj", "v_prj") if name == "typo" else ("q_proj", "v_proj"),
                  dropout=1.0 if name == "dropout-one" else 0.0)
    if name == "frozen":
        model.requires_grad_(False)
        model.base_model.model.lm_head.requires_grad_(True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    if name == "dropout-one":  # a first step would explain its zeros by lora_B = 0: take one step first
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with lora_trace.trace(model, optimizer=optimizer) as t:
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    return [(f.code, f.severity) for f in t.diagnosis.findings]


CASES = ("healthy", "frozen", "no-grad-region", "detach", "typo", "dropout-one")


def verdicts(device: str) -> dict[str, Any]:
    rows = {}
    for name in CASES:
        on_cpu, on_device = _case(name, "cpu"), _case(name, device)
        rows[name] = {"cpu": on_cpu, device: on_device, "same": on_cpu == on_device}
    return rows


def restore_check(device: str) -> dict[str, Any]:
    """`diagnose()` on the device: weights, .grad and the device RNG bit-identical afterwards."""
    model = _tiny(device, dropout=0.1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = _ids(device)
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    rng = torch.cuda.get_rng_state() if device == "cuda" else torch.get_rng_state()
    diagnosis = lora_trace.diagnose(model, lambda m: m(input_ids=ids, labels=ids).loss, optimizer=optimizer)
    after_rng = torch.cuda.get_rng_state() if device == "cuda" else torch.get_rng_state()
    same = all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    grads_none = all(p.grad is None for p in model.parameters())
    return {"codes": list(diagnosis.codes()), "weights_identical": same, "grads_untouched": grads_none,
            "rng_identical": bool(torch.equal(rng, after_rng))}


# -- 2 and 3: models, syncs, overhead -----------------------------------------------------------------------


def _to(value: Any, device: str) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device) for v in value)
    return value


def _bench(name: str, device: str) -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor], int, str]:
    from . import models

    if name == "qwen2-7-targets":  # a GPU-sized step: every linear of 12 layers adapted (84 LoRA modules)
        from peft import LoraConfig, get_peft_model
        from transformers import Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(0)
        config = Qwen2Config(hidden_size=1024, num_hidden_layers=12, num_attention_heads=16, num_key_value_heads=4,
                             intermediate_size=4096, vocab_size=8192)
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        with torch.device(device):
            lm = get_peft_model(Qwen2ForCausalLM(config), LoraConfig(r=16, target_modules=targets))
        ids = torch.randint(0, 8192, (8, 512), device=device)
        return lm.train(), (lambda m: m(input_ids=ids, labels=ids).loss), models.count_lora_modules(lm), \
            "Qwen2 hidden 1024, 12 layers, LoRA r=16 on all 7 linears, 8 x 512 tokens"
    bench = models.build(name)
    args = _to(bench.forward_args, device)
    return bench.model.to(device), (lambda m: m(*args)), bench.lora_modules, bench.description


def _variants(model: nn.Module, step: Callable[[nn.Module], torch.Tensor]) -> dict[str, Callable[[], None]]:
    def plain() -> None:
        step(model).backward()

    def traced(deep: bool) -> Callable[[], None]:
        def run() -> None:
            with lora_trace.trace(model, deep=deep) as t:
                step(model).backward()
            t.diagnosis  # noqa: B018  (the checks too: what a user reads)

        return run

    return {"plain": plain, "lora_trace": traced(False), "lora_trace-deep": traced(True)}


def _with_optimizer(model: nn.Module, step: Callable[[nn.Module], torch.Tensor]) -> Callable[[], None]:
    """A traced step that also steps an optimizer (lr 0: the timed variants keep the same weights): which LoRA
    values moved is read at the end, and must not cost one synchronisation per parameter."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)

    def run() -> None:
        with lora_trace.trace(model, optimizer=optimizer) as t:
            step(model).backward()
            optimizer.step()
        t.diagnosis  # noqa: B018

    return run


def _sync_count(run: Callable[[], None], device: str) -> int | None:
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


def _timed(run: Callable[[], None], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def overhead(name: str, device: str, rounds: int, warmup: int) -> dict[str, Any]:
    model, step, lora, description = _bench(name, device)
    variants = _variants(model, step)
    syncs = {}
    for key, run in {**variants, "lora_trace+optimizer": _with_optimizer(model, step)}.items():
        run()
        model.zero_grad(set_to_none=True)
        syncs[key] = _sync_count(run, device)
        model.zero_grad(set_to_none=True)
    times: dict[str, list[float]] = {key: [] for key in variants}
    order = list(variants)
    for index in range(warmup + rounds):
        for key in order[index % len(order):] + order[:index % len(order)]:  # rotate: no fixed order effect
            seconds = _timed(variants[key], device)
            model.zero_grad(set_to_none=True)
            if index >= warmup:
                times[key].append(seconds)
    base = times["plain"]
    result = {"model": name, "description": description, "lora_modules": lora, "syncs": syncs,
              "plain_median_s": statistics.median(base)}
    for key in ("lora_trace", "lora_trace-deep"):
        result[key] = {"ratio_of_medians": statistics.median(times[key]) / statistics.median(base),
                       "median_of_ratios": statistics.median(t / b for t, b in zip(times[key], base, strict=True))}
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/gpu")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="one round per model, small models only")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"torch": torch.__version__, "device": args.device}
    if args.device == "cuda":
        results["gpu"] = torch.cuda.get_device_name()
        torch.backends.cuda.matmul.allow_tf32 = True
    parts: list[tuple[str, Callable[[], Any]]] = [
        ("verdicts", lambda: verdicts(args.device)), ("restore", lambda: restore_check(args.device))]
    names = ("qwen2-16",) if args.quick else ("qwen2-16", "narrow-32", "qwen2-7-targets")
    for name in names:
        parts.append((f"overhead:{name}", lambda name=name: overhead(name, args.device, 1 if args.quick else 15,
                                                                      1 if args.quick else 3)))
    for key, part in parts:
        started = time.perf_counter()
        try:
            results[key] = part()
        except Exception:  # keep what the other parts measured
            results[key] = {"error": traceback.format_exc(limit=6)}
        print(f"{key}: {time.perf_counter() - started:.1f} s", flush=True)
        (out / "gpu.json").write_text(json.dumps(results, indent=1, default=str))
    print(summary(results))
    return 0


def summary(results: dict[str, Any]) -> str:
    lines = [f"torch {results['torch']} on {results.get('gpu', results['device'])}", "",
             "| case | CPU findings | same on device |", "|---|---|---|"]
    for name, row in (results.get("verdicts") or {}).items():
        if isinstance(row, dict) and "cpu" in row:
            lines.append(f"| {name} | {', '.join(c for c, _ in row['cpu']) or 'none'} | {row['same']} |")
    lines += ["", f"diagnose() restore on device: {results.get('restore')}", "",
              "| model | LoRA modules | plain step | trace (ratio of medians / median of ratios) | deep | syncs "
              "plain / trace / deep / trace with optimizer |", "|---|---|---|---|---|---|"]
    for key, row in results.items():
        if key.startswith("overhead:") and "error" not in row:
            syncs = row["syncs"]
            lines.append(
                f"| {row['model']} | {row['lora_modules']} | {row['plain_median_s'] * 1e3:.1f} ms | "
                f"{row['lora_trace']['ratio_of_medians']:.2f}x / {row['lora_trace']['median_of_ratios']:.2f}x | "
                f"{row['lora_trace-deep']['ratio_of_medians']:.2f}x / "
                f"{row['lora_trace-deep']['median_of_ratios']:.2f}x | "
                f"{syncs['plain']} / {syncs['lora_trace']} / {syncs['lora_trace-deep']} / "
                f"{syncs['lora_trace+optimizer']} |")
        elif key.startswith("overhead:") or (isinstance(row, dict) and "error" in row):
            lines.append(f"{key}: ERROR {row['error'].splitlines()[-1]}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
