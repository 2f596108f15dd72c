"""Property tests: on random models with one random injected cut (or none), the dry run names the cause,
the starved LoRA modules and the line, and its view of which LoRA parameters got a gradient is the truth.

The truth is plain PyTorch: the same step and a real backward, after the dry run (which restores state),
collecting the LoRA parameters whose `.grad` is None. Expectations come from that truth, never from the
injected cut alone: a cut that starves no trainable LoRA parameter must produce no error at all.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import lora_trace
from lora_trace.capture.locate import format_location
from lora_trace.scenarios.base import marked_line

from .random_models import CUT_KINDS, EXPECTED_CODE, FAULT_FUNCTION, BlockSpec, Cut, Region, Spec, build, specs

PEFT_PREFIX = "base_model.model."

_SETTINGS = dict(
    deadline=None,
    derandomize=True,  # CI must be reproducible
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _module_of(param: str) -> str:
    return param.rsplit(".lora_", 1)[0]


def _region_of(module: str) -> str:
    """The region design §3 names for a module of the random model: the encoder, or the root for the head."""
    parts = module.split(".")
    return ".".join(parts[:3]) if ".blocks." in module else ".".join(parts[:-1])


def _truth(model: torch.nn.Module, x: torch.Tensor) -> tuple[set[str], set[str]]:
    """(LoRA params with a gradient, trainable LoRA params without one) after a real step and backward."""
    for param in model.parameters():
        param.grad = None
    loss = model(x)
    if loss.requires_grad:
        loss.backward()
    lora = {name: p for name, p in model.named_parameters() if ".lora_" in name}
    got = {name for name, p in lora.items() if p.grad is not None}
    starved = {name for name, p in lora.items() if p.requires_grad and p.grad is None}
    for param in model.parameters():
        param.grad = None
    return got, starved


def _run(spec: Spec):
    model, x = build(spec)
    with warnings.catch_warnings():
        # a reentrant checkpoint over inputs without grad: torch's warning is the injected fault itself
        warnings.filterwarnings("ignore", message="None of the inputs have requires_grad=True")
        diagnosis = lora_trace.diagnose(model, lambda m: m(x))
        got, starved = _truth(model, x)
    # (c) always: the LoRA parameters the trace saw a gradient arrive at are exactly those a real backward fills
    traced = {a.param for a in diagnosis.trace.arrivals}
    assert traced == got, f"trace and real backward differ on {sorted(traced ^ got)}"
    return diagnosis, starved


def _expected_location(kind: str) -> str | None:
    function = FAULT_FUNCTION.get(kind)
    return None if function is None else format_location(*marked_line(function, kind))


def _summary(diagnosis) -> str:
    return "; ".join(f"{f.severity} {f.code} at {f.location} on {list(f.modules)}" for f in diagnosis.findings)


def _check_injected(spec: Spec) -> None:
    diagnosis, starved = _run(spec)
    errors = [f for f in diagnosis.findings if f.severity == "error"]
    codes = {f.code for f in errors}
    report = _summary(diagnosis)
    cut = spec.cut
    event("starves LoRA" if starved else "starves nothing")

    if cut.kind == "frozen":
        # frozen LoRA is a configuration error whether or not the layer is on the path
        assert codes == {"lora-frozen"}, report
        assert PEFT_PREFIX + cut.layer in errors[0].modules, report
        return
    if cut.kind == "no-grad-reference":
        assert not starved, "a no_grad pass beside the normal one starves nothing"
    if not starved:
        # the cut starves no trainable LoRA parameter (no LoRA upstream, a residual path around it,
        # a healthy checkpoint): not an error
        assert diagnosis.ok and not codes, report
        return

    if cut.kind == "skip":
        # the model's own forward chose not to call the block: on one step that is the model's control flow
        # (as layer drop is; only a loss left without any graph is an error); a block no step ever runs is an
        # error across steps
        skipped = [f for f in diagnosis.findings if f.code == "skipped-by-model"]
        assert codes <= {"loss-no-grad"} and skipped, report
        assert {_module_of(p) for p in starved} <= set(skipped[0].modules), report
        model, x = build(spec)
        diagnosis = lora_trace.diagnose(model, lambda m: m(x), steps=2)
        errors = [f for f in diagnosis.findings if f.severity == "error"]
        codes, report = {f.code for f in errors}, _summary(diagnosis)

    code = EXPECTED_CODE[cut.kind]
    assert codes == {code}, f"expected only {code}: {report}"
    assert errors[0].code == code, report
    named = [f for f in errors if f.code == code]
    starved_modules = {_module_of(p) for p in starved}
    assert {_region_of(m) for m in starved_modules} <= {r for f in named for r in f.regions}, report
    assert len(named) == 1, report
    assert starved_modules <= set(named[0].modules), report
    assert named[0].location == _expected_location(cut.kind), report


@pytest.mark.parametrize("kind", CUT_KINDS)
@settings(max_examples=40, **_SETTINGS)
@given(data=st.data())
def test_an_injected_cut_is_named_with_its_modules_and_line(kind, data):
    _check_injected(data.draw(specs((kind,)), label="spec"))


@settings(max_examples=60, **_SETTINGS)
@given(specs((None,)))
def test_a_model_without_a_cut_is_healthy(spec):
    diagnosis, starved = _run(spec)
    assert not starved
    assert diagnosis.ok, _summary(diagnosis)
    # a head whose base weights train beside LoRA (head_trainable) is a full fine-tune of the head: warned
    expected = {"zero-grad-at-init"} | ({"base-trainable"} if spec.head_trainable else set())
    assert {f.code for f in diagnosis.findings} - {"zero-grad-at-init"} == expected - {"zero-grad-at-init"}, \
        _summary(diagnosis)


@settings(max_examples=40, **_SETTINGS)
@given(specs(("detach", "detach-branch", "data", "numpy", "no-grad-block", "no-grad-region", "no-grad-reference")))
def test_a_cut_line_is_named_exactly_when_it_starves_lora(spec):
    """The cuts with a line: some finding points at it when, and only when, trainable LoRA starves."""
    diagnosis, starved = _run(spec)
    line = _expected_location(spec.cut.kind)
    at_line = [f for f in diagnosis.findings if f.location == line]
    if starved:
        assert at_line and at_line[0].code == EXPECTED_CODE[spec.cut.kind], _summary(diagnosis)
    else:
        assert not at_line and diagnosis.ok, _summary(diagnosis)


def test_one_checkpoint_call_is_one_finding():
    """Found by the properties: the finding was split by the line inside the block that called each LoRA layer;
    it is now located at the line that called checkpoint()."""
    block = (BlockSpec(two_branch=True, act="identity"),)
    spec = Spec(dim=4, topology="chain", residual=False, regions=(block,),
                targets=("encoder_a.blocks.0.fc", "encoder_a.blocks.0.alt"), head_trainable=True,
                cut=Cut("checkpoint"), seed=0)
    diagnosis, starved = _run(spec)
    assert {_module_of(p) for p in starved} == {PEFT_PREFIX + "encoder_a.blocks.0.fc",
                                                PEFT_PREFIX + "encoder_a.blocks.0.alt"}
    named = [f for f in diagnosis.findings if f.code == "checkpoint-no-grad"]
    assert len(named) == 1, _summary(diagnosis)
    assert set(named[0].modules) == {_module_of(p) for p in starved}
    # the boundary is the checkpoint call (or no line at all), not a line inside the block
    assert named[0].location in (None, format_location(*marked_line(Region.forward, "checkpoint")))
