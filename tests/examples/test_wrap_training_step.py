"""The wrap-a-step example runs as written, healthy and with its reproduced bug."""

from ..helpers import EXAMPLES, load_example

EXAMPLE = EXAMPLES / "wrap_training_step.py"


def _main(*argv):
    return load_example("wrap_training_step").main(list(argv))


def test_healthy_step():
    assert _main().ok


def test_detached_step_default_and_deep():
    assert _main("--detach").codes("error") == ("lora-off-path",)
    deep = _main("--detach", "--deep")
    assert deep.codes("error") == ("detached",)
    line = next(i for i, text in enumerate(EXAMPLE.read_text().splitlines(), 1) if "pooled = pooled.detach()" in text)
    assert deep.findings[0].location.endswith(f"examples/wrap_training_step.py:{line}")
