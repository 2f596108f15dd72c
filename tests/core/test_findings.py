"""Finding order (design §1) and the public surface."""

import lora_trace
from lora_trace.core.findings import Code, Finding, order_findings


def _f(code, severity="error", location=None):
    return Finding(code, severity, "m", "f", location=location)


def test_most_specific_cause_with_a_line_comes_first_and_loss_no_grad_last():
    ordered = order_findings([
        _f("loss-no-grad"), _f("zero-grad-at-init", "info"), _f("eval-mode", "warning"), _f("lora-frozen"),
        _f("lora-off-path"), _f("lora-bypassed"), _f("checkpoint-no-grad"),
        _f("lora-bypassed", location="m.py:3"), _f("grad-disabled", location="m.py:9"),
    ])
    assert [(f.code, f.location) for f in ordered] == [
        ("grad-disabled", "m.py:9"), ("lora-bypassed", "m.py:3"), ("checkpoint-no-grad", None),
        ("lora-bypassed", None), ("lora-off-path", None), ("lora-frozen", None), ("loss-no-grad", None),
        ("eval-mode", None), ("zero-grad-at-init", None),
    ]


def test_codes_print_by_value():
    assert f"{Code.GRAD_DISABLED.value}" == "grad-disabled"
    assert {c.value for c in Code} >= {"adapter-missing", "ddp-unused", "eval-mode", "zero-grad-at-init"}


def test_fixes_and_integrations_are_reachable_from_the_package():
    assert callable(lora_trace.fixes.enable_lora_gradients)
    assert callable(lora_trace.integrations.ddp.gather)
    assert lora_trace.integrations.LoraTraceCallback.__name__ == "LoraTraceCallback"


def test_public_surface_is_pinned():
    assert sorted(lora_trace.__all__) == sorted([
        "AdapterProblemError", "Code", "Comparison", "Diagnosis", "Finding", "GraphvizMissingError",
        "InvalidModelError", "LoraTraceError",
        "LossNotFoundError", "RankComparison", "RunFormatError", "Severity", "TraceStateError", "Tracer", "__version__",
        "compare", "diagnose", "fixes", "integrations", "load", "trace", "watch",
    ])
