"""Each rule against hand-built traces: milliseconds, no torch, no model. A change to a rule is tested here
first; the scenario tests then check the same rule on real models."""

from __future__ import annotations

import dataclasses

from lora_trace.analysis import diagnose_trace
from lora_trace.core.records import CutKind, LossInfo, TargetEntry

from .builder import arrival, build, call, cut, optimizer, site

Q0, Q1 = "base_model.model.enc.layers.0.q", "base_model.model.enc.layers.1.q"
TEXT = "base_model.model.text.layers.0.q"


def _codes(trace, severity=None):
    return [f.code for f in diagnose_trace(trace).findings if severity is None or f.severity == severity]


def _params(*sites):
    return [p.name for s in sites for p in s.params]


def test_a_healthy_step_has_no_finding():
    assert _codes(build([site(Q0), site(Q1)])) == []


def test_layers_that_never_ran_are_bypassed_and_name_the_regions_that_ran():
    sites = [site(Q0), site(TEXT)]
    trace = build(sites, calls=(call(Q0),), arrivals=tuple(arrival(p) for p in _params(sites[0])),
                  regions_run=("base_model.model.enc",))
    finding = diagnose_trace(trace).findings[0]
    assert finding.code == "lora-bypassed" and finding.modules == (TEXT,)
    assert finding.evidence["regions_traversed"] == ["base_model.model.enc"]


def test_layers_run_with_grad_off_are_grad_disabled_at_the_line():
    sites = [site(Q0)]
    grad_off = cut(CutKind.NO_GRAD, "model.py:12", tuple(_params(*sites)), (Q0,))
    trace = build(sites, calls=(call(Q0, grad=False, cut=0),), cuts=(grad_off,), arrivals=())
    finding = diagnose_trace(trace).findings[0]
    assert (finding.code, finding.location, finding.severity) == ("grad-disabled", "model.py:12", "error")


def test_a_detach_after_the_layer_is_named_and_preferred_over_off_path():
    sites = [site(Q0)]
    detach = cut(CutKind.DETACH, "model.py:30", tuple(_params(*sites)), (Q0,), downstream=True)
    assert _codes(build(sites, cuts=(detach,), arrivals=()), "error") == ["detached"]
    assert _codes(build(sites, arrivals=()), "error") == ["lora-off-path"]


def test_frozen_active_lora_is_lora_frozen():
    assert _codes(build([site(Q0, trainable=False)], arrivals=())) == ["lora-frozen"]


def test_disabled_merged_or_idle_adapters_are_inactive():
    for changed in (dict(disabled=True), dict(merged=True), dict(active=("other",)), dict(scaling=0.0)):
        sites = [site(Q0, **changed)]
        assert _codes(build(sites, arrivals=()), "error") == ["adapter-inactive"], changed


def test_loss_without_graph_is_folded_into_the_root_cause():
    sites = [site(Q0)]
    no_graph = (LossInfo("backward", False, False, (), 1.0),)
    bypass = build(sites, calls=(), arrivals=(), losses=no_graph)
    findings = diagnose_trace(bypass).findings
    assert [f.code for f in findings] == ["lora-bypassed"] and "no grad_fn" in findings[0].message
    assert _codes(build([], losses=no_graph), "error") == ["no-lora-params"]
    assert _codes(build([], losses=no_graph, peft_configs={}), "error") == ["adapter-missing"]


def test_zero_lora_a_gradient_with_zero_lora_b_is_info_at_init():
    s = site(Q0, b_zero=True)
    a, b = _params(s)
    trace = build([s], arrivals=(arrival(a, 0.0), arrival(b, 2.0)))
    assert [(f.code, f.severity) for f in diagnose_trace(trace).findings] == [("zero-grad-at-init", "info")]


def test_nonfinite_and_optimizer_rules():
    s = site(Q0)
    a, b = _params(s)
    assert _codes(build([s], arrivals=(arrival(a, float("nan")), arrival(b)))) == ["nonfinite-grad"]
    assert _codes(build([s], optimizer=optimizer([a]))) == ["not-in-optimizer"]
    stale = build([s], optimizer=optimizer([a, b], lrs=(0.0,), updated=[]), optimizer_steps=1)
    finding = diagnose_trace(stale).findings[0]
    assert finding.code == "not-updated" and "learning rate of 0" in finding.message


def test_unmatched_target_entries_warn_beside_valid_ones_and_fail_alone():
    s = site(Q0)
    good = TargetEntry("base_model.model", "default", "q", "name", (Q0,))
    bad = TargetEntry("base_model.model", "default", "k_proj", "name", ())
    assert [(f.code, f.severity) for f in diagnose_trace(build([s], targets=(good, bad))).findings] == [
        ("target-unmatched", "warning")]
    assert ("target-unmatched", "error") in [(f.code, f.severity) for f in
                                             diagnose_trace(build([s], targets=(bad,))).findings]


def test_eval_mode_is_a_warning_and_the_root_reads_as_the_model():
    finding = diagnose_trace(build([site(Q0)], eval_modules=("",), calls=(call(Q0, training=False),))).findings[0]
    assert (finding.code, finding.severity) == ("eval-mode", "warning")
    assert finding.message.startswith("(model) in eval mode") and finding.text("zh")[0].startswith("（模型）")
    assert _codes(build([site(Q0)], eval_modules=("",))) == []  # train() ran before the forward


def test_the_rule_set_can_fail():
    """The builder's healthy trace is healthy only while every trainable parameter arrives."""
    trace = build([site(Q0)])
    assert _codes(dataclasses.replace(trace, arrivals=trace.arrivals[:1]), "error") == ["lora-off-path"]


def test_an_exactly_zero_gradient_that_init_does_not_explain_is_grad_zero():
    s = site(Q0)  # lora_B not all zero
    a, b = _params(s)
    zero = build([s], arrivals=(arrival(a, 0.0), arrival(b, 0.0)),
                 peft_configs={"base_model.model": {"default": {"lora_dropout": 1.0}}})
    finding = diagnose_trace(zero).findings[0]
    assert (finding.code, finding.adapters, finding.evidence["causes"]) == ("grad-zero", ("default",), ["dropout"])
    assert "LoRA dropout is 1.0" in finding.message


def test_zero_gradients_are_not_claimed_when_a_factor_may_still_be_zero():
    at_init = site(Q0, b_zero=True)
    a, b = _params(at_init)
    assert _codes(build([at_init], arrivals=(arrival(a, 0.0), arrival(b, 1.0)))) == ["zero-grad-at-init"]
    unknown = dataclasses.replace(site(Q0), params=tuple(dataclasses.replace(p, all_zero=None)
                                                          for p in site(Q0).params))
    assert _codes(build([unknown], arrivals=(arrival(a, 0.0), arrival(b, 1.0)))) == []  # sharded / meta


def test_a_warm_up_from_zero_is_a_warning_and_reads_the_lr_the_update_used():
    s = site(Q0)
    params = _params(s)
    warm = dataclasses.replace(optimizer(params, lrs=(1e-4,), updated=[]), step_lrs=(0.0,), initial_lrs=(1e-3,))
    finding = diagnose_trace(build([s], optimizer=warm, optimizer_steps=1)).findings[0]
    assert (finding.code, finding.severity) == ("not-updated", "warning") and finding.evidence["lrs"] == [0.0]
    cold = dataclasses.replace(warm, initial_lrs=(None,))
    assert [(f.code, f.severity) for f in diagnose_trace(build([s], optimizer=cold, optimizer_steps=1)).findings] == [
        ("not-updated", "error")]
    start = dataclasses.replace(warm, first_step=True)  # the optimizer's first step: a warm-up's very start
    finding = diagnose_trace(build([s], optimizer=start, optimizer_steps=1)).findings[0]
    assert (finding.code, finding.severity) == ("not-updated", "info") and "first step" in finding.message
    grown = dataclasses.replace(start, lrs=(1e-4, 1e-4))  # a group added after the step: not compared
    assert diagnose_trace(build([s], optimizer=grown, optimizer_steps=1)).findings[0].severity == "info"
    stuck = dataclasses.replace(start, lrs=(0.0,))  # still 0 at the block's end: a schedule that never rises
    assert diagnose_trace(build([s], optimizer=stuck, optimizer_steps=1)).findings[0].severity == "warning"
    cold_start = dataclasses.replace(cold, first_step=True)  # no schedule set that 0: still an error
    assert [(f.code, f.severity) for f in diagnose_trace(build([s], optimizer=cold_start, optimizer_steps=1)
                                                         ).findings] == [("not-updated", "error")]


def test_an_adapter_inactive_when_it_ran_is_named_with_the_line_that_changed_it():
    from lora_trace.core.records import AdapterState, StateChange

    s = site(Q0)
    merged = dataclasses.replace(call(Q0), state=AdapterState(("default",), False, True))
    sync = StateChange("base-write", "train.py:40", ("train.py:40",), (Q0,))
    finding = diagnose_trace(build([s], calls=(merged,), arrivals=(), changes=(sync,))).findings[0]
    assert (finding.code, finding.adapters, finding.location) == ("adapter-inactive", ("default",), "train.py:40")
    assert finding.evidence["reasons"] == ["merged"]


def test_a_frozen_copy_run_without_grad_beside_a_trained_model_is_a_reference():
    policy, reference = site(Q0), site(TEXT, trainable=False)
    trace = build([policy, reference], calls=(call(Q0), call(TEXT, grad=False, seq=1)),
                  arrivals=tuple(arrival(p) for p in _params(policy)), eval_modules=("base_model.model.text",))
    assert [(f.code, f.severity) for f in diagnose_trace(trace).findings] == [("frozen-reference", "info")]


def test_unmatched_target_parameters_and_near_misses_are_reported():
    s = site(Q0)
    param = TargetEntry("base_model.model", "default", "mlp.experts.down_proj.weight", "parameter", (),
                        corrected=("mlp.experts.down_proj",),
                        meant=("base_model.model.model.layers.0.mlp.experts.down_proj",))
    module = TargetEntry("base_model.model", "default", "q", "name", (Q0,))
    findings = diagnose_trace(build([s], targets=(module, param))).findings
    [finding] = [f for f in findings if f.code == "target-unmatched"]
    assert finding.severity == "warning" and "target_parameters" in finding.message
    assert "'mlp.experts.down_proj'" in finding.fix and "target_parameters" in finding.text("zh")[0]
    assert finding.modules == ("base_model.model.model.layers.0.mlp.experts.down_proj",)
    # only parameter rows, none matched: the adapter adapts nothing at all
    assert [f.severity for f in diagnose_trace(build([s], targets=(param,))).findings
            if f.code == "target-unmatched"] == ["error"]
