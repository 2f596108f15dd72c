"""`lora-trace inspect`: adapters saved by real short training runs with planted bugs, read back from disk."""

from __future__ import annotations

import argparse
import json
import pathlib
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM

from lora_trace.core.regions import short_name
from lora_trace.saved_adapter import add_parser, compare_adapters, inspect_adapter, main, read_header, read_tensor

ROOT = pathlib.Path(__file__).resolve().parents[1]
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


def _qwen(*, init: object = True, targets: tuple[str, ...] = ATTENTION) -> nn.Module:
    torch.manual_seed(0)
    config = Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=100)
    return get_peft_model(Qwen2ForCausalLM(config), LoraConfig(r=4, lora_alpha=8, target_modules=list(targets),
                                                               init_lora_weights=init))


def _freeze(model: nn.Module, marker: str) -> None:
    """The planted bug: every LoRA parameter whose name holds `marker` is frozen before the optimizer is built."""
    for name, param in model.named_parameters():
        if marker in name and "lora_" in name:
            param.requires_grad_(False)


def _optimizer(model: nn.Module, *, leave_out: str | None = None) -> torch.optim.Optimizer:
    params = [p for n, p in model.named_parameters() if p.requires_grad and not (leave_out and leave_out in n)]
    return torch.optim.AdamW(params, lr=1e-2)


def _steps(model: nn.Module, optimizer: torch.optim.Optimizer, count: int, *, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        ids = torch.randint(0, 100, (2, 8), generator=generator)
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def _lora_modules(model: nn.Module, marker: str = "") -> set[str]:
    """The truth, from the live model: short names of LoRA-wrapped modules whose name holds `marker`."""
    return {short_name(name) for name, module in model.named_modules()
            if hasattr(module, "lora_A") and len(module.lora_A) + len(module.lora_embedding_A) and marker in name}


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="lora-trace")
    add_parser(parser.add_subparsers(dest="verb", required=True))
    code = main(parser.parse_args(["inspect", *argv]))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def buggy(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, pathlib.Path, pathlib.Path]:
    """Layer 1's adapters frozen; checkpoints after step 1 and step 3 (the model is the one after step 3)."""
    model = _qwen()
    _freeze(model, "layers.1.")
    optimizer = _optimizer(model)
    first, third = tmp_path_factory.mktemp("step1"), tmp_path_factory.mktemp("step3")
    _steps(model, optimizer, 1)
    model.save_pretrained(first)
    _steps(model, optimizer, 2, seed=2)
    model.save_pretrained(third)
    return model, first, third


def test_a_frozen_layer_is_named_exactly_and_exits_1(buggy, capsys):
    model, _, saved = buggy
    report = inspect_adapter(saved)
    truth = _lora_modules(model, "layers.1.")
    assert len(truth) == 4 and {layer.module for layer in report.untrained} == truth
    assert report.verdict == "some-never-trained" and report.exit_code == 1
    code, out, err = _cli(capsys, str(saved))
    assert code == 1 and err == ""
    assert "Never trained: 4 of 8 LoRA layers" in out
    assert "model: 4 of 8 layers never trained (k_proj 1, o_proj 1, q_proj 1, v_proj 1)" in out
    assert "8 LoRA parameters belong to these layers (both LoRA factors of each)" in out
    assert "lora_trace.diagnose" in out


def test_parameters_left_out_of_the_optimizer_are_found_too(tmp_path):
    model = _qwen()
    _steps(model, _optimizer(model, leave_out="v_proj"), 3)  # they get a .grad, never an update
    model.save_pretrained(tmp_path)
    assert {layer.module for layer in inspect_adapter(tmp_path).untrained} == _lora_modules(model, "v_proj")


def test_a_healthy_run_exits_0_with_everything_trained(tmp_path, capsys):
    model = _qwen()
    _steps(model, _optimizer(model), 3)
    model.save_pretrained(tmp_path)
    code, out, _ = _cli(capsys, str(tmp_path))
    assert code == 0 and "All trained: each of the 8 LoRA layers has a non-zero lora_B" in out
    assert inspect_adapter(tmp_path).verdict == "all-trained"


def test_json_carries_the_counts(buggy, capsys):
    code, out, _ = _cli(capsys, str(buggy[2]), "--json")
    data = json.loads(out)
    assert code == 1 and data["kind"] == "lora-trace.adapter-inspection"
    assert (data["layers"], data["lora_parameters"], data["untrained_layers"], data["untrained_parameters"]) == \
        (8, 16, 4, 8)
    assert data["zero_test"] == {"applies": True, "reason": None} and data["verdict"] == "some-never-trained"
    assert data["regions"] == [{"region": "model", "layers": 8, "untrained_layers": 4, "untrained_parameters": 8,
                                "untrained_kinds": {"k_proj": 1, "o_proj": 1, "q_proj": 1, "v_proj": 1}}]
    assert sorted(data["untrained"]) == sorted(_lora_modules(buggy[0], "layers.1."))


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj, self.k_proj = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.k_proj(torch.tanh(self.q_proj(x)))


class _Stack(nn.Module):
    def __init__(self, depth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Block() for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class _AudioLanguage(nn.Module):
    """The seed's shape in miniature: an audio tower the forward never calls, and a language model."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_tower = _Stack(3)
        self.language_model = nn.Module()
        self.language_model.model = _Stack(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.language_model.model(x)  # fault: the audio features never reach the loss


def test_the_seeds_situation_is_grouped_by_region_with_two_parameters_per_layer(tmp_path, capsys):
    torch.manual_seed(0)
    model = get_peft_model(_AudioLanguage(), LoraConfig(r=2, target_modules=["q_proj", "k_proj"]))
    optimizer = _optimizer(model)
    for _ in range(3):
        model(torch.randn(4, 8)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(tmp_path)
    code, out, _ = _cli(capsys, str(tmp_path), "--json")
    data = json.loads(out)
    regions = {group["region"]: group for group in data["regions"]}
    assert code == 1 and set(regions) == {"audio_tower", "language_model.model"}
    assert regions["audio_tower"] == {"region": "audio_tower", "layers": 6, "untrained_layers": 6,
                                      "untrained_parameters": 12, "untrained_kinds": {"k_proj": 3, "q_proj": 3}}
    assert regions["language_model.model"]["untrained_layers"] == 0
    assert set(data["untrained"]) == _lora_modules(model, "audio_tower")
    _, text, _ = _cli(capsys, str(tmp_path))
    assert "audio_tower: 6 of 6 layers never trained (k_proj 3, q_proj 3)" in text
    assert "language_model.model: 0 of 4 layers never trained" in text
    assert "12 LoRA parameters belong to these layers" in text


def test_two_checkpoints_list_what_changed_and_by_how_much(buggy, capsys):
    model, first, third = buggy
    changes = compare_adapters(first, third)
    moved = {c.key: c for c in changes.changes if c.changed}
    assert moved and all(".layers.0." in key and c.rel_change > 0 for key, c in moved.items())
    assert len(moved) == 8 and len(changes.unchanged) == 8
    assert all(".layers.1." in key for key in changes.unchanged) and changes.exit_code == 1
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    before, after = load_file(first / "adapter_model.safetensors")[key], model.state_dict()[
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"]
    assert moved[key].rel_change == pytest.approx(float((after - before).norm() / before.norm()), rel=1e-5)
    assert moved[key].max_abs_diff == pytest.approx(float((after - before).abs().max()), rel=1e-5)
    code, out, _ = _cli(capsys, str(first), str(third))
    assert code == 1 and "16 tensors in both: 8 changed, 8 unchanged" in out
    assert "model  q_proj lora_B (1): " in out and "layers.1.self_attn.q_proj.lora_A.weight" in out


def test_an_identical_pair_changed_nothing(buggy, capsys):
    code, out, _ = _cli(capsys, str(buggy[2]), str(buggy[2]), "--json")
    data = json.loads(out)
    assert code == 1 and data["changed"] == [] and len(data["unchanged"]) == data["compared"] == 16


def test_a_healthy_pair_changed_everything_and_tensors_in_one_folder_are_listed(tmp_path, capsys):
    model = _qwen()
    optimizer = _optimizer(model)
    _steps(model, optimizer, 1)
    model.save_pretrained(tmp_path / "a")
    _steps(model, optimizer, 2)
    model.save_pretrained(tmp_path / "b")
    assert _cli(capsys, str(tmp_path / "a"), str(tmp_path / "b"))[0] == 0
    tensors = load_file(tmp_path / "b" / "adapter_model.safetensors")
    gone = tensors.pop("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight")
    tensors["base_model.model.lm_head.weight"] = torch.ones(3)
    (tmp_path / "c").mkdir()
    save_file(tensors, tmp_path / "c" / "adapter_model.safetensors")
    shutil.copy(tmp_path / "b" / "adapter_config.json", tmp_path / "c")
    changes = compare_adapters(tmp_path / "a", tmp_path / "c")
    assert changes.only_before == ("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight",)
    assert changes.only_after == ("base_model.model.lm_head.weight",) and gone.numel() > 0
    assert "Only in before (1):" in str(changes) and not changes.unchanged


def test_a_bf16_adapter_is_read_bit_for_bit(tmp_path):
    model = _qwen()
    _freeze(model, "layers.1.")
    _steps(model, _optimizer(model), 3)
    model.to(torch.bfloat16).save_pretrained(tmp_path)
    report = inspect_adapter(tmp_path)
    assert report.dtypes == ("BF16",)
    assert {layer.module for layer in report.untrained} == _lora_modules(model, "layers.1.")
    entries = {e.key: e for e in read_header(tmp_path / "adapter_model.safetensors")}
    live = model.state_dict()["base_model.model.model.layers.0.self_attn.k_proj.lora_B.default.weight"]
    with (tmp_path / "adapter_model.safetensors").open("rb") as handle:
        read = read_tensor(handle, entries["base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"])
    assert live.any() and np.array_equal(read, live.float().numpy().astype(np.float64))


def test_the_zero_factor_of_an_embedding_is_lora_embedding_a(tmp_path):
    """PEFT starts embeddings the other way round: lora_embedding_A at zero, lora_embedding_B random."""
    model = _qwen(targets=("q_proj", "embed_tokens"))
    _freeze(model, "embed_tokens")
    _steps(model, _optimizer(model), 3)
    model.save_pretrained(tmp_path, save_embedding_layers=False)
    assert {layer.module for layer in inspect_adapter(tmp_path).untrained} == {"model.embed_tokens"}


@pytest.mark.parametrize("init", [False, "olora"])
def test_a_non_zero_init_makes_no_never_trained_claim(tmp_path, capsys, init):
    model = _qwen(init=init)
    _freeze(model, "layers.1.")
    _steps(model, _optimizer(model), 3)
    model.save_pretrained(tmp_path)
    code, out, _ = _cli(capsys, str(tmp_path), "--json")
    data = json.loads(out)
    assert code == 0 and data["verdict"] == "unknown" and data["untrained"] == []
    assert data["zero_test"]["applies"] is False and "init_lora_weights" in data["zero_test"]["reason"]
    _, text, _ = _cli(capsys, str(tmp_path))
    assert "Cannot tell from one checkpoint" in text and "Never trained" not in text


def test_gaussian_init_starts_lora_b_at_zero_so_the_zero_test_applies(tmp_path):
    model = _qwen(init="gaussian")
    assert not any(p.any() for n, p in model.named_parameters() if "lora_B" in n)  # PEFT's init, checked
    _freeze(model, "layers.1.")
    _steps(model, _optimizer(model), 3)
    model.save_pretrained(tmp_path)
    report = inspect_adapter(tmp_path)
    assert report.zero_test_reason is None and {m.module for m in report.untrained} == _lora_modules(model, "layers.1.")


def _no_config(path: pathlib.Path, saved: pathlib.Path) -> None:
    shutil.copy(saved / "adapter_model.safetensors", path)


def _pickle_only(path: pathlib.Path, saved: pathlib.Path) -> None:
    shutil.copy(saved / "adapter_config.json", path)
    sentinel = path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    (path / "adapter_model.bin").write_bytes(pickle.dumps(Payload()))


def _named_adapter(path: pathlib.Path, saved: pathlib.Path) -> None:
    shutil.copytree(saved, path / "other")  # PEFT saves a non-default adapter in a subfolder named after it


def _truncated(path: pathlib.Path, saved: pathlib.Path) -> None:
    shutil.copy(saved / "adapter_config.json", path)
    data = (saved / "adapter_model.safetensors").read_bytes()
    (path / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])


def _garbage_header(path: pathlib.Path, saved: pathlib.Path) -> None:
    shutil.copy(saved / "adapter_config.json", path)
    (path / "adapter_model.safetensors").write_bytes((40).to_bytes(8, "little") + b"{not json" + b" " * 60)


@pytest.mark.parametrize(("make", "message"), [
    (None, "is not a folder"),
    (_no_config, "has no adapter_config.json"),
    (_pickle_only, "safe_serialization=True"),
    (_named_adapter, "it holds adapters in subfolders other: pass one of those"),
    (_truncated, "truncated"),
    (_garbage_header, "header is not valid JSON"),
])
def test_bad_input_exits_2_with_one_plain_line(buggy, tmp_path, capsys, make, message):
    target = tmp_path / "adapter"
    if make is not None:
        target.mkdir()
        make(target, buggy[2])
    code, out, err = _cli(capsys, str(target))
    assert code == 2 and out == "" and err.startswith("lora-trace: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (target / "unpickled").exists()  # the pickle was never loaded


def test_two_adapters_of_different_peft_types_are_refused(buggy, tmp_path, capsys):
    shutil.copytree(buggy[2], tmp_path / "ia3")
    config = json.loads((tmp_path / "ia3" / "adapter_config.json").read_text())
    (tmp_path / "ia3" / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    code, _, err = _cli(capsys, str(buggy[2]), str(tmp_path / "ia3"))
    assert code == 2 and "different PEFT types (LORA and IA3)" in err
    assert "zero test is defined for LoRA only" in inspect_adapter(tmp_path / "ia3").zero_test_reason


def test_inspecting_needs_no_torch(buggy):
    code = ("import sys\nsys.modules['torch'] = None\nfrom lora_trace.saved_adapter import inspect_adapter\n"
            f"print(len(inspect_adapter({str(buggy[2])!r}).untrained))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "4", result.stderr
