"""Distributed runs compared rank by rank (`lora_trace.compare`, `lora-trace diff`), from saved runs."""

import pathlib

import pytest

import lora_trace
from lora_trace.analysis.distributed import DistributedDiagnosis
from lora_trace.analysis.rank_compare import RankComparison, load_rank_comparison
from lora_trace.cli import main

GOLDEN = pathlib.Path(__file__).parents[1] / "golden"


@pytest.fixture
def runs():
    return lora_trace.load(GOLDEN / "demo-broken.run.json"), lora_trace.load(GOLDEN / "demo-fixed.run.json")


def test_one_distributed_run_compares_each_rank_with_rank_0(runs):
    broken, fixed = runs
    ranked = lora_trace.compare(DistributedDiagnosis((fixed, fixed, broken), ()))
    assert isinstance(ranked, RankComparison)
    assert ranked.ranks == (1, 2) and ranked.divergent_ranks == (2,) and not ranked.same_path
    lost = ranked.pairs[1].lost
    assert lost and any(".audio_tower." in m for m in lost)  # rank 2 lost the path the fixed config trains
    assert "rank 2:" in str(ranked) and "rank 1: same path" in str(ranked)


def test_two_distributed_runs_compare_rank_by_rank_and_say_what_is_missing(runs, tmp_path):
    broken, fixed = runs
    before = DistributedDiagnosis((broken, broken), ())
    after = DistributedDiagnosis((fixed, broken, broken), ())
    before.save(tmp_path / "before.json")
    after.save(tmp_path / "after.json")
    ranked = lora_trace.compare(tmp_path / "before.json", tmp_path / "after.json")
    assert ranked.divergent_ranks == (0,) and ranked.pairs[0].gained and not ranked.pairs[1].gained
    assert ranked.note == "2 ranks in before.json, 3 in after.json: the first 2 compared"
    ranked.save(tmp_path / "ranked.json")
    assert load_rank_comparison(tmp_path / "ranked.json") == ranked
    # a single run on one side counts as rank 0
    assert lora_trace.compare(GOLDEN / "demo-fixed.run.json", tmp_path / "after.json").same_path


def test_two_single_runs_still_give_a_plain_comparison(runs):
    assert type(lora_trace.compare(*runs)).__name__ == "Comparison"


def test_the_cli_diffs_a_distributed_run_and_refuses_one_single_run(runs, tmp_path, capsys):
    broken, fixed = runs
    DistributedDiagnosis((fixed, broken), ()).save(tmp_path / "ddp-run.json")
    assert main(["diff", str(tmp_path / "ddp-run.json")]) == 1
    assert "LoRA path differs on ranks [1]" in capsys.readouterr().out
    DistributedDiagnosis((fixed, fixed), ()).save(tmp_path / "same.json")
    assert main(["diff", str(tmp_path / "same.json")]) == 0
    assert main(["diff", str(GOLDEN / "demo-fixed.run.json")]) == 2
    assert "give a second run" in capsys.readouterr().err
