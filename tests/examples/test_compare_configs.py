"""The sweep example prints the right matrix: checked against plain PyTorch gradients."""

from lora_trace.core.regions import region_of
from lora_trace.scenarios import contrastive_qwen2_audio, measure_gradients

from ..helpers import load_example


def test_the_matrix_matches_plain_pytorch_gradients():
    example = load_example("compare_configs")
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
