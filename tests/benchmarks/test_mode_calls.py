"""The per-call benchmark of the deep mode runs and reports each variant (its numbers are RESULTS.md's)."""

from benchmarks import mode_calls


def test_the_per_call_measure_reports_every_variant():
    result = mode_calls.measure(rounds=1)
    assert set(result["added_us_per_call"]) == {"bare", "empty mode", "PathWatch"}
    assert result["added_us_per_call"]["bare"] == 0.0 and result["bare_us_per_call"] > 0
