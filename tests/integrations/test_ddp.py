"""A real 2-process torchrun on gloo: one rank takes a different path; the gathered report names it."""

import json
import pathlib
import subprocess

import pytest

from .launching import ROOT, TORCHRUN, launch, torchrun

EXAMPLE = ROOT / "examples" / "ddp_torchrun.py"


def _torchrun(out: pathlib.Path, *extra: str) -> subprocess.CompletedProcess:
    """One 2-rank launch (about 6 s), killed whole and retried once if it hangs (launching.py)."""
    return torchrun(EXAMPLE, 2, "--out", str(out), *extra, timeout=150)


@pytest.mark.parametrize("diverge", [True, False])
def test_two_ranks_gathered(tmp_path, diverge):
    result = _torchrun(tmp_path, *(["--diverge"] if diverge else []))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "ddp-run.json").read_text())
    assert [r["trace"]["label"] for r in data["ranks"]] == ["rank0", "rank1"]
    codes = [f["code"] for f in data["findings"]]
    if diverge:
        assert codes == ["ddp-unused"]
        finding = data["findings"][0]
        assert finding["evidence"]["divergent_ranks"] == [1]
        assert sorted(finding["evidence"]["missing"]["1"]) == [
            "base_model.model.block2.lora_A.default.weight", "base_model.model.block2.lora_B.default.weight"]
        assert finding["modules"] == ["base_model.model.block2"]  # the layers, for the report and the graph
        assert "rank 1" in finding["message"] and "ranks [1] took a different LoRA path" in result.stdout
        rank1 = [f["code"] for f in data["ranks"][1]["findings"]]
        assert "lora-bypassed" in rank1
    else:
        assert codes == [] and "different LoRA path" not in result.stdout


def test_an_adapter_made_trainable_after_wrapping_drifts_and_the_checksums_say_so(tmp_path):
    result = _torchrun(tmp_path, "--late-adapter")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "ddp-run.json").read_text())
    drift = [f for f in data["findings"] if f["code"] == "ddp-drift"]
    assert len(drift) == 1 and drift[0]["evidence"]["ranks"] == [1] and drift[0]["evidence"]["wrapped"] is True
    # lora_A's first gradient is exactly zero (lora_B starts at zero): it moves alike on both ranks; lora_B drifts
    assert drift[0]["evidence"]["params"] == ["base_model.model.block1.lora_B.default.weight"]


@pytest.mark.parametrize("options", [
    (), ("--find-unused", "false"), ("--static-graph", "--warmup", "1"),
    ("--static-graph", "--find-unused", "false", "--warmup", "1"),
], ids=["find-unused", "no-find-unused", "static-graph", "static-graph-no-find-unused"])
def test_an_accumulation_window_reports_each_micro_step_and_no_false_unused(tmp_path, options):
    """Three micro-steps, two under no_sync() and the last synchronised, traced as one window. (static_graph
    needs a synchronised step before its first no_sync(): PyTorch's reducer asserts otherwise, pytorch#143580.)"""
    result = _torchrun(tmp_path, "--accumulate", "3", *options)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "ddp-run.json").read_text())
    assert data["findings"] == []  # no ddp-unused, no ddp-drift: the window's gradients were all-reduced
    for rank in data["ranks"]:
        steps = rank["trace"]["micro_steps"]
        assert [m["synced"] for m in steps] == [False, False, True]
        assert all(len(m["params"]) == 4 for m in steps)
        assert not [f for f in rank["findings"] if f["severity"] == "error"]
    assert "3 calls of the model (an accumulation window): 2 under DDP no_sync(), 1 synchronised" in result.stdout


def test_two_nodes_each_with_its_own_launcher_are_named_by_node_and_rank(tmp_path):
    """Two torchrun launchers, one process each, meeting at a c10d rendezvous on this machine: as two nodes."""
    import socket

    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = launch(*[
        [TORCHRUN, "--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1", "--rdzv-backend", "c10d",
         "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "lora-trace-test", str(EXAMPLE), "--out",
         str(tmp_path / f"node{node}"), "--diverge"] for node in (0, 1)])
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    saved = list(tmp_path.glob("node*/ddp-run.json"))
    assert len(saved) == 1  # written by global rank 0, wherever the rendezvous put it
    data = json.loads(saved[0].read_text())
    places = data["places"]
    assert [p["rank"] for p in places] == [0, 1] and sorted(p["node"] for p in places) == [0, 1]
    assert all(p["local_rank"] == 0 and p["host"] for p in places)
    report = "".join(r.stdout for r in results)
    assert "2 ranks on 2 nodes" in report and "rank 1 (node " in report
    assert [f["code"] for f in data["findings"]] == ["ddp-unused"]  # rank 1 skipped block2, on its node
