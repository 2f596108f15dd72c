"""Source locations: which user/model line disabled grad mode, which line cut the path.

Frames inside torch, transformers, peft, accelerate, the standard library and lora_trace itself are
library frames; the location is the innermost frame outside them (lora_trace.scenarios plays user code).
"""

from __future__ import annotations

import ast
import functools
import linecache
import os
import re
import sys
import sysconfig
from dataclasses import dataclass
from types import FrameType

import torch

_LIBRARY_PACKAGES = (  # the training stacks and what they call into: never the line to point at
    "torch", "transformers", "peft", "accelerate", "safetensors", "huggingface_hub", "_pytest", "pluggy",
    "kernels", "trl", "lightning", "pytorch_lightning", "lightning_fabric", "datasets", "deepspeed", "bitsandbytes",
)
_USER_PSEUDO_FILES = ("<ipython-input-", "<stdin>")  # code typed by the user (<string> is also generated code)
_MACHINERY = tuple(os.path.join("torch", *p) for p in (("overrides.py",), ("nn", "modules", "module.py")))
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # lora_trace/
_USER_INSIDE_PACKAGE = os.path.join(_PACKAGE_DIR, "scenarios") + os.sep  # the demo model plays user code
_STDLIB = os.path.normcase(os.path.abspath(sysconfig.get_paths()["stdlib"]))
_GRAD_OFF = re.compile(r"\b(no_grad|inference_mode|set_grad_enabled)\b")
_CHECKPOINT_FILE = os.path.join("torch", "utils", "checkpoint.py")
_current_node = getattr(torch._C, "_current_autograd_node", None)  # the backward node running now, else None


@functools.lru_cache(maxsize=4096)
def is_library_file(filename: str) -> bool:
    path = os.path.normcase(os.path.abspath(filename))
    if filename.startswith("<"):
        return not filename.startswith(_USER_PSEUDO_FILES)  # <frozen ...> is Python's own
    if path.startswith(_PACKAGE_DIR + os.sep) and not path.startswith(_USER_INSIDE_PACKAGE):
        return True
    parts = path.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        index = max(i for i, p in enumerate(parts) if p in ("site-packages", "dist-packages"))
        return index + 1 < len(parts) and parts[index + 1] in _LIBRARY_PACKAGES
    return path.startswith(_STDLIB + os.sep)


def _is_own(filename: str) -> bool:
    path = os.path.abspath(filename)
    own = path.startswith(_PACKAGE_DIR + os.sep) and not path.startswith(_USER_INSIDE_PACKAGE)
    return own or path.endswith(_MACHINERY)  # hooks and torch-function dispatch: how we saw it, not where


def format_location(filename: str, line: int) -> str:
    """`path:LINE`, the path relative to the working directory when the file is under it."""
    path = os.path.abspath(filename)
    cwd = os.getcwd()
    if path.startswith(cwd + os.sep):
        path = os.path.relpath(path, cwd)
    return f"{path}:{line}"


def _frame_text(frame: FrameType) -> str:
    return f"{format_location(frame.f_code.co_filename, frame.f_lineno)} in {frame.f_code.co_name}"


@dataclass(frozen=True)
class Site:
    location: str | None
    stack: tuple[str, ...]  # innermost last; the library frame kept when the cut happens inside a library


def _frames(start: FrameType | None, limit: int = 200) -> list[FrameType]:
    frames = []
    while start is not None and len(frames) < limit:
        frames.append(start)
        start = start.f_back
    return frames


def call_site(depth: int = 1) -> Site:
    """Where the current call comes from: the innermost user frame, and the user frames leading there."""
    frames = _frames(sys._getframe(depth + 1))
    return _site(frames, None)


def _site(frames: list[FrameType], location: str | None, *, keep_library: bool = True) -> Site:
    while frames and _is_own(frames[0].f_code.co_filename):
        frames = frames[1:]
    user = [f for f in frames if not is_library_file(f.f_code.co_filename)]
    stack = [_frame_text(f) for f in reversed(user[:8])]
    if keep_library and frames and user and frames[0] is not user[0]:
        stack.append(_frame_text(frames[0]))  # the library frame where it really happened
    if location is None and user:
        location = format_location(user[0].f_code.co_filename, user[0].f_lineno)
    return Site(location, tuple(stack))


@dataclass(frozen=True)
class GradOffSite(Site):
    checkpoint_inputs: tuple[bool, ...] | None = None  # set when grad is off inside a reentrant checkpoint
    how: str = "block"  # "block" | "decorator" | "library" (a library's own no_grad) | "call" (a
    # `torch.set_grad_enabled(False)` statement earlier in the function) | "global" (off before this code ran) |
    # "unknown" (no source to read: a notebook cell that linecache lost, a compiled file)


def grad_off_site(depth: int = 1) -> GradOffSite:
    """Why grad is off here: the user's `with torch.no_grad():` line (or decorator), or a reentrant
    checkpoint's first forward (then the `requires_grad` flags of the checkpoint's tensor inputs)."""
    frames = _frames(sys._getframe(depth + 1))
    in_library = False
    for index, frame in enumerate(frames):
        code = frame.f_code
        if code.co_filename.endswith(_CHECKPOINT_FILE) and code.co_name == "forward" and "ctx" in frame.f_locals:
            args = frame.f_locals.get("args", ())
            flags = tuple(bool(a.requires_grad) for a in args if hasattr(a, "requires_grad"))
            site = _site(frames[index:], None, keep_library=False)  # the line that called checkpoint()
            return GradOffSite(site.location, site.stack, flags)
        if _is_own(code.co_filename):
            continue
        found = _grad_off_statement(code.co_filename, frame.f_lineno)
        if found is not None and is_library_file(code.co_filename):
            in_library = True  # a library's own `no_grad` (generate(), a frozen tower): named at the user's call
            continue
        if found is not None:
            line, how = found
            site = _site(frames, format_location(code.co_filename, line), keep_library=False)
            return GradOffSite(site.location, site.stack, how=how)
    if in_library:
        site = _site(frames, None, keep_library=True)
        return GradOffSite(site.location, site.stack, how="library")
    user = [f for f in frames if not is_library_file(f.f_code.co_filename) and not _is_own(f.f_code.co_filename)]
    for frame in user:  # no block or decorator anywhere: grad was switched off by a plain call, or before
        line = _set_grad_call(frame.f_code.co_filename, frame.f_lineno)
        if line is not None:
            site = _site(frames, format_location(frame.f_code.co_filename, line), keep_library=False)
            return GradOffSite(site.location, site.stack, how="call")
    site = _site(frames, None, keep_library=False)
    unreadable = any(_parse(f.f_code.co_filename) is None for f in user)  # no source: nothing can be ruled out
    return GradOffSite(site.location, site.stack, how="unknown" if unreadable else "global")


@functools.lru_cache(maxsize=4096)
def _grad_off_statement(filename: str, line: int) -> tuple[int, str] | None:
    """(line, "block" | "decorator") of the innermost `with` or decorator that turns grad off around `line`."""
    tree = _parse(filename)
    if tree is None:
        return None
    best: tuple[int, int, str] | None = None  # (start line of the enclosing node, line to report, how)
    for node in ast.walk(tree):
        end = getattr(node, "end_lineno", None)
        if end is None or not node.lineno <= line <= end:
            continue
        if isinstance(node, (ast.With, ast.AsyncWith)):
            hits = [item for item in node.items if _GRAD_OFF.search(ast.unparse(item.context_expr))]
            if hits and (best is None or node.lineno >= best[0]):
                best = (node.lineno, node.lineno, "block")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            hits = [d for d in node.decorator_list if _GRAD_OFF.search(ast.unparse(d))]
            if hits and (best is None or node.lineno >= best[0]):
                best = (node.lineno, hits[0].lineno, "decorator")
    return (best[1], best[2]) if best else None


@functools.lru_cache(maxsize=4096)
def _set_grad_call(filename: str, line: int) -> int | None:
    """The line of the last `torch.set_grad_enabled(False)` statement before `line` in the function holding it."""
    tree = _parse(filename)
    if tree is None:
        return None
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module))
                 and getattr(n, "lineno", 0) <= line <= getattr(n, "end_lineno", line)]
    scope = max(functions, key=lambda n: getattr(n, "lineno", 0), default=None)
    calls = [n.lineno for n in ast.walk(scope) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
             and n.lineno < line and _is_grad_off_call(n.value)] if scope is not None else []
    return max(calls, default=None)


def _is_grad_off_call(call: ast.Call) -> bool:
    name = ast.unparse(call.func)
    return name.endswith("set_grad_enabled") and bool(call.args) and ast.unparse(call.args[0]) in ("False", "0")


@functools.lru_cache(maxsize=256)
def _parse(filename: str) -> ast.AST | None:
    """The file's syntax tree, read through linecache (it also holds Jupyter cells); None when unreadable."""
    lines = linecache.getlines(filename)
    if not lines:
        return None
    try:
        return ast.parse("".join(lines), filename)
    except (SyntaxError, ValueError):
        return None


def _checkpoint_frame_on_stack(functions: tuple[str, ...], *, needs_ctx: bool = False, limit: int = 200) -> bool:
    """Whether a frame of torch/utils/checkpoint.py running one of `functions` is on the current stack."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(limit):
        if frame is None:
            return False
        code = frame.f_code
        if code.co_name in functions and code.co_filename.endswith(_CHECKPOINT_FILE) and (
                not needs_ctx or "ctx" in frame.f_locals):
            return True
        frame = frame.f_back
    return False


def in_checkpoint_recompute() -> bool:
    """Whether the current forward is an activation checkpoint re-running during backward. A recompute runs
    inside an autograd node's backward: outside one (every call of a plain forward) no stack is walked."""
    if _current_node is not None and _current_node() is None:
        return False
    return _checkpoint_frame_on_stack(("backward", "recompute_fn"))


def in_checkpoint_forward() -> bool:
    """Whether the current op runs inside a reentrant checkpoint's first forward (grad off on purpose)."""
    return _checkpoint_frame_on_stack(("forward",), needs_ctx=True)
