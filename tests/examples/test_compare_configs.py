"""The sweep example prints the right matrix: checked against plain PyTorch gradients."""

import importlib.util
import pathlib

from lora_trace.regions import region_of
from lora_trace.scenarios import contrastive_qwen2_audio, measure_gradients

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "compare_configs.py"


def _load():
    spec = importlib.util.spec_from_file_location("compare_configs", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_matrix_matches_plain_pytorch_gradients():
    example = _load()
    matrix = example.sweep()
    assert len(matrix) == 8
    for (targets, strategy), row in matrix.items():
        measured = measure_gradients(contrastive_qwen2_audio(targets=targets, strategy=strategy))
        for region, (trained, held) in row.items():
            modules = {n.split(".lora_")[0] for n in measured.states
                       if region_of(n.split(".lora_")[0]).endswith(region)}
            with_grad = {n.split(".lora_")[0] for n in measured.with_grad()}
            assert (trained, held) == (len(modules & with_grad), len(modules)), (targets, strategy, region)
    text = example.format_matrix(matrix)
    assert "seed-list              audio_tower         6/6 trained     0/14 trained" in text
