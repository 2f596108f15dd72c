"""`lora-trace run`: unchanged scripts of each stack (examples/train_*.py), run in a subprocess as a user would."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import warnings

import pytest

import lora_trace

from ..integrations.launching import TEARDOWN_ABORT

ROOT = pathlib.Path(__file__).resolve().parents[2]
PY = sys.executable


def _run(tmp_path, *command, options=(), timeout=240, env=None):
    """`lora-trace run` in its own process group, so a launch that hangs is killed whole (torchrun and ranks)."""
    out = tmp_path / "runs"
    argv = [PY, "-m", "lora_trace", "run", "--no-render", "--out", str(out), *options, "--", *command]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        stdout, stderr = child.communicate()
        raise subprocess.TimeoutExpired(argv, timeout, stdout, stderr) from None
    return subprocess.CompletedProcess(argv, child.returncode, stdout, stderr), out


def _example(name):
    return str(ROOT / "examples" / f"train_{name}.py")


def _listing(folder):
    """The files a run left, without the folder's own mark (.lora-trace-run)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _line_of(name, text):
    """examples/train_<name>.py:<line> of the first line holding `text`."""
    lines = (ROOT / "examples" / f"train_{name}.py").read_text().splitlines()
    return f"examples/train_{name}.py:{next(i for i, line in enumerate(lines, 1) if text in line)}"


def test_a_plain_loop_is_traced_unchanged_with_its_optimizer_found_by_the_global_step_hook(tmp_path):
    done, out = _run(tmp_path, PY, _example("loop"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained 3 steps" in done.stdout and "No error" in done.stdout
    diagnosis = lora_trace.load(out / "step-0.json")
    assert diagnosis.ok and diagnosis.trace.optimizer_steps == 1 and diagnosis.trace.backward
    assert len(diagnosis.trace.optimizer.params) == 8 and diagnosis.trace.optimizer.updated
    assert _listing(out) == ["step-0.json"]


def test_a_frozen_layer_is_named_and_the_saved_adapter_alone_shows_it_never_trained(tmp_path):
    adapter = tmp_path / "adapter"
    done, out = _run(tmp_path, PY, _example("loop"), "--bug", "frozen-layer", "--save", str(adapter))
    assert done.returncode == 1, done.stderr[-3000:]
    diagnosis = lora_trace.load(out / "step-0.json")
    frozen, = [f for f in diagnosis.findings if f.code == "lora-frozen"]
    assert {m.split("layers.")[1][:1] for m in frozen.modules} == {"1"}
    inspected = subprocess.run([PY, "-m", "lora_trace", "inspect", str(adapter), "--json"], capture_output=True,
                               text=True, timeout=60)
    assert inspected.returncode == 1, inspected.stderr
    untrained = json.dumps(json.loads(inspected.stdout))
    assert "layers.1.self_attn.q_proj" in untrained and "layers.0.self_attn.q_proj" not in untrained


def test_several_steps_are_each_saved_and_judged_together(tmp_path):
    done, out = _run(tmp_path, PY, _example("loop"), options=("--steps", "2"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert _listing(out) == ["run.json", "step-0.json", "step-1.json"]
    assert "Judged across 2 steps" in done.stdout and len(lora_trace.load(out / "run.json").steps) == 2


def test_a_script_that_crashes_in_the_step_keeps_its_exit_code_and_gets_its_diagnosis(tmp_path):
    done, out = _run(tmp_path, PY, _example("loop"), "--bug", "detach", options=("--deep",))
    assert done.returncode == 1 and "RuntimeError: element 0 of tensors" in done.stderr
    diagnosis = lora_trace.load(out / "step-0.json")
    assert not diagnosis.complete and diagnosis.root_cause.code == "detached"
    assert diagnosis.root_cause.location.endswith(_line_of("loop", "logits = logits.detach()"))


@pytest.mark.parametrize("bug, code", [("none", None), ("reentrant", "checkpoint-no-grad")])
def test_the_hf_trainer(tmp_path, bug, code):
    done, out = _run(tmp_path, PY, _example("hf"), "--bug", bug)
    diagnosis = lora_trace.load(out / "step-0.json")
    if code is None:
        assert done.returncode == 0 and diagnosis.ok and diagnosis.trace.optimizer_steps == 1, done.stderr[-3000:]
    else:  # the Trainer's backward raised: the script's exit code, the step's diagnosis
        assert done.returncode == 1 and "does not require grad" in done.stderr
        assert diagnosis.root_cause.code == code and not diagnosis.complete


@pytest.mark.parametrize("bug, errors", [("none", ()), ("frozen", ("lora-frozen",))])
def test_lightning(tmp_path, bug, errors):
    pytest.importorskip("lightning")
    done, out = _run(tmp_path, PY, _example("lightning"), "--bug", bug)
    assert done.returncode == (1 if errors else 0), done.stderr[-3000:]
    diagnosis = lora_trace.load(out / "step-0.json")
    assert diagnosis.codes("error") == errors and diagnosis.trace.optimizer_steps == 1
    assert bug != "none" or not diagnosis.codes("warning")


@pytest.mark.parametrize("bug, warnings", [("none", ()), ("typo", ("target-unmatched",))])
def test_trl_sft_with_checkpoint_recomputes_is_one_model_one_step(tmp_path, bug, warnings):
    """SFTTrainer turns on activation checkpointing: the recompute in backward calls attention modules from
    outside any module call, and they must not be taken for models of their own."""
    pytest.importorskip("trl")
    done, out = _run(tmp_path, PY, _example("trl_sft"), "--bug", bug)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _listing(out) == ["step-0.json"]
    diagnosis = lora_trace.load(out / "step-0.json")
    assert diagnosis.ok and diagnosis.codes("warning") == warnings, diagnosis.report()


@pytest.mark.parametrize("bug", ["none", "rank1-no-grad"])
def test_torchrun_writes_a_run_per_rank_and_the_gathered_view(tmp_path, bug):
    torchrun = str(pathlib.Path(PY).with_name("torchrun"))
    launch = (torchrun, "--standalone", "--nproc-per-node", "2", _example("ddp"), "--bug", bug)
    env = {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    try:
        done, out = _run(tmp_path, *launch, timeout=150, env=env)
        if bug == "none" and done.returncode != 0 and TEARDOWN_ABORT in done.stderr:  # as launching.py retries
            warnings.warn(f"a rank aborted in gloo's teardown, retrying once: {done.stderr[-2000:]!r}", stacklevel=1)
            done, out = _run(tmp_path, *launch, timeout=150, env=env)
    except subprocess.TimeoutExpired as hung:  # the gloo teardown hang tests/integrations/test_ddp.py describes
        warnings.warn(f"torchrun launch hung for 150 s, retrying once; its output: {hung.stderr!r}", stacklevel=1)
        done, out = _run(tmp_path, *launch, timeout=150, env=env)
    ranks = [lora_trace.load(out / f"rank-{r}" / "step-0.json") for r in (0, 1)]
    gathered = json.loads((out / "gathered.json").read_text())
    assert gathered["kind"] == "lora-trace.distributed"
    if bug == "none":
        assert done.returncode == 0 and all(d.ok for d in ranks), done.stderr[-3000:]
        assert "lora-trace: 2 ranks" in done.stdout and "different LoRA path" not in done.stdout
    else:  # rank 0's backward waits for rank 1's gradients until the gloo timeout; rank 1 names its no_grad line
        assert done.returncode != 0
        assert ranks[1].root_cause.code == "grad-disabled"
        assert ranks[1].root_cause.location.endswith(_line_of("ddp", "with torch.no_grad() if grad_off"))
        assert "ranks [1] took a different LoRA path than rank 0" in done.stdout


def test_bad_input_and_a_script_with_no_adapter(tmp_path):
    done, _ = _run(tmp_path)
    assert done.returncode == 2 and "give the command to run after --" in done.stderr
    done, _ = _run(tmp_path, "no-such-program-here")
    assert done.returncode == 2 and "no such program" in done.stderr
    done, _ = _run(tmp_path, PY, "-c", "import torch; torch.nn.Linear(2, 2)(torch.ones(2))")
    assert done.returncode == 1 and "no training step was traced" in done.stderr


@pytest.mark.parametrize("bug, errors", [("none", ()), ("not-in-optimizer", ("not-in-optimizer",))])
def test_accelerate(tmp_path, bug, errors):
    done, out = _run(tmp_path, PY, _example("accelerate"), "--bug", bug)
    assert done.returncode == (1 if errors else 0), done.stderr[-3000:]
    diagnosis = lora_trace.load(out / "step-0.json")
    assert diagnosis.codes("error") == errors and diagnosis.trace.optimizer is not None
    assert bug != "none" or not diagnosis.codes("warning")


def test_every_model_traced_in_the_step_is_judged_and_sets_the_exit_code(tmp_path):
    """Two separately wrapped towers; the second runs under no_grad: the verdict covers both."""
    script = tmp_path / "two_towers.py"
    script.write_text(
        "import sys, torch\n"
        f"sys.path.insert(0, {str(ROOT / 'examples')!r})\n"
        "import tiny\n"
        "query, document = tiny.lora_model(0), tiny.lora_model(1)\n"
        "params = [p for m in (query, document) for p in m.parameters() if p.requires_grad]\n"
        "optimizer = torch.optim.AdamW(params, lr=1e-3)\n"
        "ids = tiny.token_rows(2)\n"
        "q = query(input_ids=ids).logits.mean(1)\n"
        "with torch.no_grad():\n"
        "    d = document(input_ids=ids).logits.mean(1)\n"
        "(q @ d.T).logsumexp(1).mean().backward()\n"
        "optimizer.step()\n")
    done, out = _run(tmp_path, PY, str(script))
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Model 2 of 2" in done.stdout and "grad-disabled" in done.stdout
    assert _listing(out) == ["step-0.json", "step-0.model-1.json"]


def test_a_run_folder_is_cleared_of_its_own_runs_only_and_a_foreign_one_is_refused(tmp_path):
    done, out = _run(tmp_path, PY, _example("loop"), options=("--steps", "2"))
    assert done.returncode == 0 and (out / ".lora-trace-run").exists()
    (out / "notes.txt").write_text("mine")
    (out / "rank-1").mkdir()
    (out / "rank-1" / "step-0.json").write_text("{}")  # left by an earlier torchrun run into the same folder
    done, out = _run(tmp_path, PY, _example("loop"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert _listing(out) == ["notes.txt", "step-0.json"]  # the earlier runs and the emptied rank folder are gone
    foreign = tmp_path / "results"
    foreign.mkdir()
    (foreign / "run.json").write_text("a user's own file")
    refused = subprocess.run([PY, "-m", "lora_trace", "run", "--out", str(foreign), "--", PY, "-c", "pass"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "choose another --out" in refused.stderr
    assert (foreign / "run.json").read_text() == "a user's own file"
