"""The GPU check script runs end to end (on the CPU here, one round): it must be ready for the next GPU."""

import json

from benchmarks import gpu_check


def test_the_gpu_check_runs_on_the_cpu_and_finds_the_same_verdicts(tmp_path, capsys):
    assert gpu_check.main(["--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert set(results["verdicts"]) == set(gpu_check.CASES)
    expected = {"healthy": [], "frozen": ["lora-frozen"], "no-grad-region": ["grad-disabled"],
                "detach": ["detached"], "typo": [], "dropout-one": ["grad-zero"]}
    for case, errors in expected.items():
        assert [c for c, severity in results["verdicts"][case]["cpu"] if severity == "error"] == errors, case
    assert results["restore"]["weights_identical"] and results["restore"]["rng_identical"]
    assert results["overhead:qwen2-16"]["lora_trace"]["ratio_of_medians"] > 0
    assert "| qwen2-16 | 16 |" in capsys.readouterr().out
