"""The wrap-a-step example runs as written, healthy and with its reproduced bug."""

import importlib.util
import pathlib

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "wrap_training_step.py"


def _main(*argv):
    spec = importlib.util.spec_from_file_location("wrap_training_step", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(list(argv))


def test_healthy_step():
    assert _main().ok


def test_detached_step_default_and_deep():
    assert _main("--detach").codes("error") == ("lora-off-path",)
    deep = _main("--detach", "--deep")
    assert deep.codes("error") == ("detached",)
    line = next(i for i, text in enumerate(EXAMPLE.read_text().splitlines(), 1) if "pooled = pooled.detach()" in text)
    assert deep.findings[0].location.endswith(f"examples/wrap_training_step.py:{line}")
