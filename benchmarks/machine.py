"""What the numbers were measured on: CPU, cores, memory, and the version of everything involved.

Why it matters: overhead ratios depend on the CPU (vector width, cache) and on library versions (a torch
release can change hook or dispatch cost; TorchLens changes its API between releases).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys

PACKAGES = ("lora-trace", "torch", "transformers", "peft", "numpy", "graphviz", "torchviz", "torchview",
            "torchlens")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def dot_version() -> str:
    if shutil.which("dot") is None:
        return "not installed"
    result = subprocess.run(["dot", "-V"], capture_output=True, text=True, check=False)
    return (result.stderr or result.stdout).strip() or "unknown"


def describe() -> dict[str, object]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "versions": versions,
        "dot": dot_version(),
    }
