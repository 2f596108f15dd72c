"""FSDP2 (`fully_shard` per block) on 2 and 4 real gloo ranks: each rank holds a shard of every adapter
parameter, the explicit gather answers for all of them, and a rank that skips a block is named."""

import json
import math
import pathlib
import subprocess
import time

import pytest

from .launching import ROOT, torchrun

EXAMPLE = ROOT / "examples" / "fsdp_torchrun.py"


def _torchrun(out: pathlib.Path, ranks: int, *extra: str) -> subprocess.CompletedProcess:
    return torchrun(EXAMPLE, ranks, "--out", str(out), *extra)


@pytest.mark.parametrize("ranks", [2, 4])
def test_the_gather_answers_for_every_shard(tmp_path, ranks):
    result = _torchrun(tmp_path, ranks)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    healthy = json.loads((tmp_path / "none.json").read_text())
    truth = json.loads((tmp_path / "none.truth.json").read_text())  # FSDP's own full_tensor() norms
    assert [f["code"] for f in healthy["findings"]] == []
    shards = {s["name"]: s for s in healthy["shards"]}
    assert set(shards) == set(truth)
    for name, norm in truth.items():
        assert math.isclose(shards[name]["grad_norm"], norm, rel_tol=1e-5, abs_tol=1e-9), name
        assert shards[name]["ranks_with_grad"] == list(range(ranks))  # arrived everywhere
        assert shards[name]["all_zero"] is ("lora_B" in name)  # across shards: lora_B starts at zero
    combined = [(f["code"], f["severity"]) for f in healthy["combined"]["findings"]]
    assert ("zero-grad-at-init", "info") in combined and not any(s == "error" for _, s in combined)
    for rank in range(ranks):  # one rank's shard proves no zero: never a grad-zero from a single rank
        alone = json.loads((tmp_path / f"none.rank-{rank}.json").read_text())
        assert not [f["code"] for f in alone["findings"] if f["severity"] == "error"]

    no_grad = json.loads((tmp_path / "no-grad.json").read_text())
    codes = [f["code"] for f in no_grad["findings"]]
    assert codes[0] == "grad-disabled" and "ddp-unused" not in codes  # the same path on every rank
    assert no_grad["findings"][0]["location"].endswith("fsdp_torchrun.py:" + _line("fault: no-grad"))

    frozen = json.loads((tmp_path / "frozen.json").read_text())
    assert [f["code"] for f in frozen["findings"]] == ["lora-frozen"]
    assert frozen["findings"][0]["modules"] == ["base_model.model.blocks.1.0"]

    late = json.loads((tmp_path / "late.json").read_text())  # FSDP2 reduces what requires grad at backward
    assert [f["code"] for f in late["findings"]] == [], late["findings"]
    assert all(s["grad_norm"] is not None for s in late["shards"])


def test_a_rank_that_skips_a_sharded_block_is_named_and_no_rank_hangs(tmp_path):
    started = time.monotonic()
    result = _torchrun(tmp_path, 2, "--fault", "skip", "--timeout", "5")
    assert result.returncode != 0 and time.monotonic() - started < 60
    skipper = json.loads((tmp_path / "skip.rank-1.json").read_text())
    assert skipper["trace"]["raised_in_backward"] is True
    root = skipper["findings"][0]
    assert root["code"] == "ddp-unused" and root["modules"] == ["base_model.model.blocks.1.0"], skipper["findings"]
    assert "blocks.1" in root["message"] and "Timed out" in root["message"]
    waiting = json.loads((tmp_path / "skip.rank-0.json").read_text())  # it ran every block and waited
    assert [f["code"] for f in waiting["findings"] if f["severity"] == "error"] == []  # no false cut


def _line(marker: str) -> str:
    return str(next(i for i, line in enumerate(EXAMPLE.read_text().splitlines(), 1) if marker in line))
