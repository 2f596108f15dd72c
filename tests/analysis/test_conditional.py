"""The model's own skips, read from hand-built traces: which enclosing module ran, which was not called, and
when something inside ran anyway (a bypass). Torch-free."""

from lora_trace.analysis import diagnose_trace
from lora_trace.analysis.conditional import Skip, model_skips
from lora_trace.analysis.facts import Facts
from lora_trace.analysis.steps import judge_steps

from .builder import build, call, site

EXPERTS = ["m.moe.experts.0.up", "m.moe.experts.1.up", "m.moe.experts.2.up"]
ENCLOSING = ("", "m", "m.moe", "m.moe.experts.0", "m.moe.experts.1", "m.moe.experts.2")
TYPES = ("Peft", "Model", "SparseMoe", "Expert", "Expert", "Expert")


def _step(ran_experts, *, called=None):
    sites = [site(m) for m in EXPERTS]
    ran = [m for m in EXPERTS if any(m.startswith(f"m.moe.experts.{i}.") for i in ran_experts)]
    params = {p.name for s in sites if s.module in ran for p in s.params}
    default_called = ("", "m", "m.moe") + tuple(f"m.moe.experts.{i}" for i in ran_experts)
    return build(sites, calls=tuple(call(m, seq=i) for i, m in enumerate(ran)),
                 arrivals=tuple(a for a in build(sites).arrivals if a.param in params),
                 enclosing=ENCLOSING, enclosing_types=TYPES,
                 enclosing_called=default_called if called is None else called)


def test_an_expert_no_token_reached_is_a_skip_with_its_evidence_and_not_an_error():
    trace = _step([0, 1])
    assert model_skips(trace, Facts(trace).calls)[0] == {"m.moe.experts.2.up": Skip("m.moe.experts.2", "m.moe")}
    diagnosis = diagnose_trace(trace)
    assert diagnosis.ok and "skipped-by-model" in diagnosis.codes("info")


def test_something_inside_that_ran_without_its_parent_is_a_bypass():
    trace = _step([0, 1], called=("", "m", "m.moe.experts.0", "m.moe.experts.1"))  # m.moe itself never called
    assert model_skips(trace, Facts(trace).calls)[0] == {}
    assert diagnose_trace(trace).codes("error") == ("lora-bypassed",)


def test_nothing_around_it_ran_is_not_the_models_choice():
    trace = _step([], called=())
    assert model_skips(trace, Facts(trace).calls)[0] == {}


def test_a_run_saved_before_this_evidence_existed_keeps_the_old_verdict():
    trace = _step([0, 1])
    trace = type(trace)(**{**trace.__dict__, "enclosing": None})
    assert diagnose_trace(trace).codes("error") == ("lora-bypassed",)


def test_across_steps_an_expert_that_ran_once_is_healthy_and_one_that_never_ran_is_an_error():
    healthy = judge_steps([diagnose_trace(_step([0, 1])), diagnose_trace(_step([2]))])
    assert healthy.ok and len(healthy.steps) == 2
    broken = judge_steps([diagnose_trace(_step([0, 1])), diagnose_trace(_step([1]))])
    assert broken.codes("error") == ("lora-bypassed",)
    assert broken.root_cause.modules == ("m.moe.experts.2.up",)
    assert broken.root_cause.evidence["siblings_ran"] == ["m.moe.experts.0", "m.moe.experts.1"]
    assert "routing" in broken.root_cause.message
