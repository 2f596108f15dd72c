"""Project rules that a reviewer would otherwise check by hand."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]



def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "lora_trace", "tests", "benchmarks", "examples"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_is_much_over_400_lines():
    long = {p.name: n for p in (ROOT / "lora_trace").rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_no_pickle_anywhere_in_the_package():
    for path in (ROOT / "lora_trace").rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "torch.load(" not in text, path
