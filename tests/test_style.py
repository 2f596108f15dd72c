"""Project rules that a reviewer would otherwise check by hand."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
TORCH_FREE = ["core/records.py", "core/findings.py", "core/serialize.py", "core/errors.py", "core/regions.py",
              "present/text.py", "core/messages.py", "present/graph.py", "present/dot.py", "present/html.py",
              "analysis/compare.py"]


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "lora_trace", "tests", "benchmarks", "examples"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_is_much_over_400_lines():
    long = {p.name: n for p in (ROOT / "lora_trace").rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_saved_runs_load_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import importlib.util, pathlib\n"
            f"for name in {TORCH_FREE!r}:\n"
            "    __import__('lora_trace.' + name[:-3].replace('/', '.'))\n")
    # the package __init__ imports torch-using modules; load the torch-free ones through a stub package
    stub = ("import sys, types, pathlib\n"
            f"pkg = types.ModuleType('lora_trace'); pkg.__path__ = [{str(ROOT / 'lora_trace')!r}]\n"
            "sys.modules['lora_trace'] = pkg\n" + code)
    result = subprocess.run([sys.executable, "-c", stub], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_pickle_anywhere_in_the_package():
    for path in (ROOT / "lora_trace").rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "torch.load(" not in text, path
