"""Runs as JSON: round trip, non-finite numbers, and clear errors for anything that is not a run."""

import json
import math

import pytest

import lora_trace
from lora_trace.core.errors import RunFormatError
from lora_trace.core.serialize import SCHEMA_VERSION, diagnosis_to_dict
from lora_trace.scenarios import contrastive_qwen2_audio

from ..helpers import traced_step


@pytest.fixture(scope="module")
def diagnosis():
    scenario = contrastive_qwen2_audio(fault="no-grad")
    return lora_trace.diagnose(scenario.model, scenario.step, optimizer=scenario.optimizer, label="broken")


def test_round_trip_is_exact(tmp_path, diagnosis):
    path = tmp_path / "run.json"
    diagnosis.save(path)
    loaded = lora_trace.load(path)
    assert loaded.findings == diagnosis.findings
    assert loaded.trace == diagnosis.trace
    assert loaded.ok is False and loaded.label == "broken"
    text = path.read_text(encoding="utf-8")
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION
    assert "pickle" not in text


def test_codes_and_enums_are_plain_strings(diagnosis):
    data = diagnosis_to_dict(diagnosis)
    assert data["findings"][0]["code"] == "grad-disabled"
    assert data["trace"]["calls"][0]["phase"] == "forward"
    assert "Code." not in json.dumps(data) and "CutKind." not in json.dumps(data)


def test_non_finite_numbers_are_strings(tmp_path):
    scenario = contrastive_qwen2_audio(targets="audio-only")
    tracer = traced_step(scenario)
    arrivals = tuple(a.__class__(a.param, a.count, math.nan, None, False) for a in tracer.trace.arrivals)
    import dataclasses

    diagnosis = lora_trace.Diagnosis((), dataclasses.replace(tracer.trace, arrivals=arrivals))
    diagnosis.save(tmp_path / "nan.json")
    assert '"nan"' in (tmp_path / "nan.json").read_text()
    assert math.isnan(lora_trace.load(tmp_path / "nan.json").trace.arrivals[0].norm)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe not utf-8", "not UTF-8 JSON"),
        (b"{not json", "not UTF-8 JSON"),
        (b"[1, 2]", "not a lora-trace run"),
        (b'{"kind": "something-else"}', "not a lora-trace run"),
        (b'{"kind": "lora-trace.run", "schema_version": 99}', "schema_version 99"),
        (b'{"kind": "lora-trace.run", "schema_version": 1, "findings": [], "trace": {}}', "missing field"),
    ],
)
def test_malformed_input_gets_a_plain_message(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(RunFormatError, match=message):
        lora_trace.load(path)


def test_a_wrong_type_deep_inside_is_named(tmp_path, diagnosis):
    data = diagnosis_to_dict(diagnosis)
    data["trace"]["calls"][0]["seq"] = "zero"
    path = tmp_path / "typed.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RunFormatError, match=r"trace\.calls\[0\]\.seq"):
        lora_trace.load(path)


def test_oversized_and_missing_files_are_refused(tmp_path, diagnosis):
    path = tmp_path / "run.json"
    diagnosis.save(path)
    with pytest.raises(RunFormatError, match="over the 100-byte limit"):
        lora_trace.load(path, max_bytes=100)
    with pytest.raises(RunFormatError, match="cannot read"):
        lora_trace.load(tmp_path / "missing.json")


GOLDEN = __import__("pathlib").Path(__file__).parents[1] / "golden"


def test_every_saved_kind_goes_through_one_codec_and_has_a_loader(tmp_path):
    from lora_trace.analysis.compare import load_comparison
    from lora_trace.analysis.distributed import DistributedDiagnosis, load_distributed, unused_findings

    broken, fixed = lora_trace.load(GOLDEN / "demo-broken.run.json"), lora_trace.load(GOLDEN / "demo-fixed.run.json")
    comparison = lora_trace.compare(broken, fixed)
    comparison.save(tmp_path / "diff.json")
    assert load_comparison(tmp_path / "diff.json") == comparison
    ranks = (broken, fixed)
    gathered = DistributedDiagnosis(ranks, unused_findings(ranks))
    gathered.save(tmp_path / "ddp.json")
    again = load_distributed(tmp_path / "ddp.json")
    assert again == gathered and again.divergent_ranks == (1,)


def test_a_file_of_another_kind_is_named(tmp_path):
    lora_trace.compare(GOLDEN / "demo-broken.run.json", GOLDEN / "demo-fixed.run.json").save(tmp_path / "diff.json")
    with pytest.raises(RunFormatError, match="it is a 'lora-trace.comparison' file"):
        lora_trace.load(tmp_path / "diff.json")


def test_a_comparison_keeps_non_finite_ratios_as_text(tmp_path):
    from lora_trace.analysis.compare import load_comparison

    comparison = lora_trace.compare(GOLDEN / "demo-broken.run.json", GOLDEN / "demo-fixed.run.json")
    odd = __import__("dataclasses").replace(comparison, norm_ratios={"m": math.inf, "n": math.nan})
    odd.save(tmp_path / "odd.json")
    assert json.loads((tmp_path / "odd.json").read_text())["norm_ratios"] == {"m": "inf", "n": "nan"}
    loaded = load_comparison(tmp_path / "odd.json").norm_ratios
    assert loaded["m"] == math.inf and math.isnan(loaded["n"])
