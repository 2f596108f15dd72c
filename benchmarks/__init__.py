"""Benchmarks of lora-trace: `python -m benchmarks` (or `make bench`) writes benchmarks/RESULTS.md.

Not part of the test run. Every measurement runs in its own fresh interpreter (worker.py), so one tool's
global state (TorchLens wraps torch functions; anomaly mode; allocator caches) and one job's peak memory
cannot leak into another's numbers. Torch runs on one thread and variants are interleaved, so a noisy
neighbour on the machine slows both sides of a ratio alike.
"""
