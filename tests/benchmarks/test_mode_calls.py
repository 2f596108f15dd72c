"""The per-call benchmark of the deep mode runs and reports each variant (its numbers are RESULTS.md's)."""

from benchmarks import mode_calls


def test_the_per_call_measure_reports_every_variant():
    result = mode_calls.measure(rounds=1)
    assert set(result["added_us_per_call"]) == {"bare", "empty mode", "PathWatch"}
    assert result["added_us_per_call"]["bare"] == 0.0 and result["bare_us_per_call"] > 0


def test_a_target_is_judged_on_the_worse_statistic_and_says_when_they_disagree():
    from benchmarks.targets import robust_ratio

    assert robust_ratio({"median_pair_ratio": 1.669, "ratio_of_medians": 1.672}) == (1.672, "")
    ratio, note = robust_ratio({"median_pair_ratio": 1.61, "ratio_of_medians": 1.28})  # the run
    assert ratio == 1.61 and "disagree" in note
