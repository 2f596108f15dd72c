"""The layer contract of design §3, checked on the source: no lower layer imports a higher one at module
level, no import cycle, and the torch-free layers (and `import lora_trace`) import no torch."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lora_trace"
# What each layer may import at module level (the top layer: cli, demo, fixes, integrations, scenarios).
ALLOWED = {
    "core": {"core"},
    "capture": {"core", "capture"},
    "analysis": {"core", "analysis"},
    "present": {"core", "analysis", "present"},
    "top": {"core", "capture", "analysis", "present", "top"},
}
# Convenience methods that import a higher layer inside the method (design §3): Diagnosis.report/render,
# Tracer.diagnosis, Comparison.__str__.
LAZY_UPWARDS = {("core", "analysis"), ("core", "present"), ("capture", "analysis"), ("analysis", "present")}
TORCH_FREE_LAYERS = ("core", "analysis", "present")


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED and parts[1] != "top" else "top"


def _imports(path: pathlib.Path) -> list[tuple[str, bool]]:
    """(absolute lora_trace module imported, at module level?) for every import in the file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    top_level |= {id(n) for node in tree.body if isinstance(node, ast.If) for n in node.body}  # TYPE_CHECKING
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] if node.module else [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        is_type_only = any(isinstance(n, ast.If) and node in n.body and "TYPE_CHECKING" in ast.unparse(n.test)
                           for n in tree.body)
        for name in names:
            if name == "lora_trace" or name.startswith("lora_trace."):
                found.append((name, id(node) in top_level and not is_type_only))
    return found


def _sources() -> list[pathlib.Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_layer_imports_a_higher_one():
    wrong = []
    for path in _sources():
        here = _layer(_module_name(path))
        for target, module_level in _imports(path):
            there = _layer(target)
            if there in ALLOWED[here] or target == "lora_trace":
                continue
            if not module_level and (here, there) in LAZY_UPWARDS:
                continue
            wrong.append(f"{_module_name(path)} ({here}) imports {target} ({there})")
    assert wrong == []


def test_the_contract_can_fail():
    assert "core" not in {_layer("lora_trace.capture.tracer")} and _layer("lora_trace.cli") == "top"
    assert _layer("lora_trace.present.text") not in ALLOWED["core"]


def test_no_import_cycle_at_module_level():
    modules = {_module_name(p): p for p in _sources()}
    edges = {}
    for name, path in modules.items():
        targets = set()
        for target, module_level in _imports(path):
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]  # `from .x import name`: the module is x
            if module_level and target in modules and target != name and not name.startswith(target + "."):
                targets.add(target)
        edges[name] = targets
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for child in sorted(edges[node]):
            if state.get(child) == 1 and not cycle:
                cycle.extend(trail + [node, child])
            elif child not in state:
                visit(child, trail + [node])
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [])
    assert cycle == []


def test_every_subpackage_says_what_it_may_import():
    for layer in ("core", "capture", "analysis", "present"):
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text(encoding="utf-8"))) or ""
        assert "May import" in doc, layer


def test_the_torch_free_layers_and_the_package_import_no_torch():
    modules = ["lora_trace", "lora_trace.cli"] + [_module_name(p) for layer in TORCH_FREE_LAYERS
                                                  for p in sorted((PACKAGE / layer).rglob("*.py"))]
    code = ("import sys\nsys.modules['torch'] = None\nsys.modules['peft'] = None\nsys.modules['transformers'] = None\n"
            f"for name in {modules!r}:\n    __import__(name)\n"
            "import lora_trace\nd = lora_trace.load('tests/golden/demo-broken.run.json')\n"
            "d.report(); d.report(lang='zh'); lora_trace.compare(d, d)\n"
            "assert sys.modules['torch'] is None\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_capture_functions_still_reachable_after_a_plain_import():
    code = ("import lora_trace\nassert callable(lora_trace.fixes.enable_lora_gradients)\n"
            "assert lora_trace.integrations.ddp.gather\nassert lora_trace.Tracer.__name__ == 'Tracer'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
