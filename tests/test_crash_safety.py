"""Runs killed at the worst moments resume to exactly the weights of an uninterrupted run; clean stops.

The kill chain, for each train script, one and two CPU processes: SIGKILL in a step, SIGTERM in a step (clean
stop), SIGKILL while writing a checkpoint, SIGKILL while swapping in the pipeline, then a resume that finishes.
"""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing

import numpy as np
import pytest
import torch
from helpers import ROOT, TINY_RUN
from safetensors.torch import load_file

from diffusion_lab.commands import train_ddpm
from diffusion_lab.pipelines.export import load_pipeline
from diffusion_lab.stopping import TrainingStopped

# 64 images, a global batch of 16: 4 steps per epoch, so a pipeline is saved at steps 4 and 8, checkpoints likewise.
KILL_RUN = [*TINY_RUN, "--max_train_samples", "64", "--max_train_steps", "8", "--checkpointing_steps", "4",
            "--checkpoints_total_limit", "2", "--use_ema", "--learning_rate", "1e-3"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Run:
    """One training command in its own process group, paused at `point` (see pausing_worker.py)."""

    def __init__(self, script, processes, output_dir, *flags, point="none", launcher=None):
        worker = [ROOT / "tests" / "pausing_worker.py", point, script, "--output_dir", output_dir, *KILL_RUN,
                  "--train_batch_size", 16 // processes, *flags]
        if processes == 1 and not launcher:
            command = [sys.executable, *worker]
        else:
            command = [sys.executable, "-m", "accelerate.commands.launch", *(["--multi_gpu"] if processes > 1 else []), "--num_processes",
                       processes, "--num_machines", 1, "--mixed_precision", "no", "--dynamo_backend", "no",
                       "--main_process_port", _free_port(), *worker]
        self.log_path = output_dir.parent / f"{output_dir.name}-{point}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1",
               **({"PAUSING_WORKER_DEATHSIG": "production"} if launcher else {})}
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(list(map(str, command)), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=os.getcwd())

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_pause(self, timeout=300) -> None:
        deadline = time.monotonic() + timeout
        while "paused at" not in self.log:
            assert self.process.poll() is None, f"exited with {self.process.returncode} before pausing:\n{self.log[-3000:]}"
            assert time.monotonic() < deadline, f"did not pause within {timeout} s:\n{self.log[-3000:]}"
            time.sleep(0.1)

    def signal(self, signum) -> int:
        """Send `signum` to the whole process group (as Ctrl-C or a scheduler would) and wait for the end."""
        os.killpg(self.process.pid, signum)
        try:
            return self.process.wait(timeout=120)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)

    def finish(self) -> None:
        assert self.process.wait(timeout=300) == 0, self.log[-3000:]


def checkpoints(folder):
    return sorted(path.name for path in folder.glob("checkpoint-*"))


def safetensors_of(folder):
    """Every tensor of the pipeline and of the last checkpoint (raw and EMA weights), by file and name."""
    files = [path for path in folder.rglob("*.safetensors") if "checkpoint-8" in path.parts or "checkpoint" not in str(path.relative_to(folder))]
    return {f"{path.relative_to(folder)}:{name}": tensor for path in files for name, tensor in load_file(path).items()}


@pytest.mark.slow
# Both objectives in one process (where the step in flight is given up: the cold one also puts back and checkpoints its
# start statistics), and two processes once (where ranks finish the step).
@pytest.mark.parametrize("script, processes", [("train_ddpm.py", 1), ("train_cold.py", 1), ("train_ddpm.py", 2)])
def test_killed_runs_resume_to_the_weights_of_an_uninterrupted_run(script, processes, tmp_path):
    reference = tmp_path / "reference"
    reference_run = Run(script, processes, reference)  # runs beside the killed ones: nothing is shared but the code

    folder = tmp_path / "killed"
    run = Run(script, processes, folder, point="step-6")
    run.wait_for_pause()
    run.signal(signal.SIGKILL)
    assert checkpoints(folder) == ["checkpoint-4"]

    resume = ("--resume_from_checkpoint", "latest")
    run = Run(script, processes, folder, *resume, point="step-7")
    run.wait_for_pause()
    assert run.signal(signal.SIGTERM) != 0
    if processes == 1:  # the step in flight is given up (one process, see StopSignals.abandoning_steps)
        stopped = 6
        assert "SIGTERM received during step 7: gave that step up; checkpoint-6 holds the run after step 6" in run.log
    else:  # ranks finish the step (one could otherwise wait in its gradient all-reduce for another)
        stopped = 7
        assert "stopped after step 7 and wrote checkpoint-7; to go on, rerun the same command with --resume_from_checkpoint latest" in run.log
    assert checkpoints(folder) == ["checkpoint-4", f"checkpoint-{stopped}"]

    run = Run(script, processes, folder, *resume, point="checkpoint-8")
    run.wait_for_pause()
    run.signal(signal.SIGKILL)
    assert checkpoints(folder) == ["checkpoint-4", f"checkpoint-{stopped}", "checkpoint-8.tmp"]  # cut off: never 'latest'
    assert not (folder / "checkpoint-8.tmp" / "optimizer.bin").exists()

    run = Run(script, processes, folder, *resume, point="pipeline")
    run.wait_for_pause()
    run.signal(signal.SIGKILL)
    assert checkpoints(folder) == [f"checkpoint-{stopped}", "checkpoint-8"]  # pruned to 2, the stale .tmp removed
    with pytest.raises(FileNotFoundError, match="saving the pipeline in .* was cut off: resume the run"):
        load_pipeline(str(folder))  # half old, half new: refuses to load rather than mixing weights

    Run(script, processes, folder, *resume).finish()
    reference_run.finish()
    expected, resumed = safetensors_of(reference), safetensors_of(folder)
    assert expected.keys() == resumed.keys() and len(expected) > 0
    assert all(torch.equal(expected[key], resumed[key]) for key in expected), [k for k in expected if not torch.equal(expected[k], resumed[k])]
    load_pipeline(str(folder))


def wait_for(condition, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.2)


def test_sigterm_to_the_launcher_during_a_long_step_leaves_a_resumable_run(tmp_path):
    """`kill <pid of accelerate launch>` (a scheduler, or Ctrl-C in its terminal): accelerate's launcher sends SIGTERM
    to the training process and kills it 5 s later (1.16), less than one step of a large model on a loaded CPU. The
    step in flight (13 s, every layer slowed down) is given up, the checkpoint of the step before is written at once,
    the lock is released, and the run resumes."""
    folder = tmp_path / "run"
    no_scheduled_checkpoints = ("--checkpointing_steps", 100)
    run = Run("train_ddpm.py", 1, folder, *no_scheduled_checkpoints, point="slow-3", launcher="accelerate")
    wait_for(lambda: "slowed at slow-3" in run.log, "step 3", timeout=300)
    time.sleep(1)  # inside the step's forward pass
    sent_at = time.time()
    os.kill(run.process.pid, signal.SIGTERM)  # the launcher only, not its process group
    assert run.process.wait(timeout=60) != 0
    # Written (0.5 s after the signal on a loaded 2-core CPU) well before the launcher's kill 5 s after it.
    assert (folder / "checkpoint-2" / "manifest.json").stat().st_mtime - sent_at < 4
    assert ("stopped: SIGTERM received during step 3: gave that step up; checkpoint-2 holds the run after step 2; to go on, "
            "rerun the same command with --resume_from_checkpoint latest.") in run.log
    assert checkpoints(folder) == ["checkpoint-2"] and not (folder / ".run.lock").exists()
    Run("train_ddpm.py", 1, folder, *no_scheduled_checkpoints, "--resume_from_checkpoint", "latest", "--max_train_steps", 4).finish()
    load_pipeline(str(folder))


def test_sigterm_while_decoding_images_leaves_no_partial_cache(tmp_path):
    cache = tmp_path / "cache"
    code = ("from diffusion_lab.commands import run_command\nfrom diffusion_lab.data import load_image_caches\n"
            "run_command(lambda argv: load_image_caches(resolution=128), [])\n")
    env = {**os.environ, "DIFFUSION_LAB_CACHE": str(cache)}
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=stderr)
    try:
        wait_for(lambda: list(cache.glob("*.tmp.npy")), "decoding", timeout=600)  # after datasets load and the mode scan
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
    assert log.read_text().strip().splitlines()[-1] == (
        "stopped: SIGTERM received while decoding images: nothing was saved; rerun the command.")
    # The partial cache (a sparse file of several GB) is gone; only the record of the source folders' content stays.
    assert [path.name for path in cache.iterdir()] == ["sources"]


def test_a_sigterm_that_lands_in_a_librarys_except_exception_still_stops():
    """tqdm swallows any Exception while it starts its monitor thread, the moment a decoding loop begins: a SIGTERM
    there went unnoticed, the decoding ran to its end and the process exited 0 (the partial-cache test above failed so
    once in a full run, its stderr holding tqdm's warning with our stop message)."""
    code = ("import os, signal, time\nfrom diffusion_lab.stopping import TrainingStopped, stop_cleanly_on_sigterm\n"
            "try:\n"
            "    with stop_cleanly_on_sigterm('decoding images'):\n"
            "        try:\n"
            "            os.kill(os.getpid(), signal.SIGTERM)\n"
            "            time.sleep(30)\n"
            "        except Exception:\n"
            "            pass\n"
            "        print('went on')\n"
            "except TrainingStopped as stopped:\n"
            "    print(stopped.exit_code, stopped)\n")
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert printed == "143 SIGTERM received while decoding images: nothing was saved; rerun the command.\n"


@pytest.mark.parametrize("step", [4, 8], ids=["mid-run", "after-the-last-step"])
def test_a_stop_while_a_grid_is_drawn_ends_within_seconds_and_resumes(step, tmp_path):
    folder = tmp_path / "run"
    no_scheduled_checkpoints = ("--checkpointing_steps", 100)
    run = Run("train_ddpm.py", 1, folder, *no_scheduled_checkpoints, point=f"grid-{step}")
    run.wait_for_pause()
    sent = time.monotonic()
    assert run.signal(signal.SIGTERM) == 128 + signal.SIGTERM
    assert time.monotonic() - sent < 30
    assert "SIGTERM received: sampling abandoned." in run.log
    assert f"stopped after step {step} and wrote checkpoint-{step}; to go on, rerun the same command with --resume_from_checkpoint latest" in run.log
    assert checkpoints(folder) == [f"checkpoint-{step}"]
    assert not (folder / "samples" / f"epoch_{step // 4:04d}.png").exists()  # the grid was skipped
    if step == 8:  # training had finished: the pipeline was still written
        load_pipeline(str(folder))
    Run("train_ddpm.py", 1, folder, *no_scheduled_checkpoints, "--resume_from_checkpoint", "latest").finish()
    load_pipeline(str(folder))
    assert (folder / "samples" / "epoch_0002.png").exists() == (step == 4)


def train_in_process(folder, *flags):
    """A short in-process run: 6 steps of 16 images, checkpoints every 2 steps."""
    argv = ["--output_dir", str(folder), *TINY_RUN, "--train_batch_size", "16", "--max_train_steps", "6", "--checkpointing_steps", "2"]
    args = train_ddpm.parse_args([*argv, *map(str, flags)])
    return train_ddpm.run_training(args, train_ddpm.DDPMObjective.from_args(args), argv=["train_ddpm.py"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted") / "run"
    train_in_process(folder)
    return folder


def unet_weights(folder):
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


def same_tensors(expected, actual):
    return expected.keys() == actual.keys() and all(torch.equal(expected[key], actual[key]) for key in expected)


def _patch_training_loss(monkeypatch, change):
    """Wrap the DDPM loss of training steps (not validation): `change(step, loss)` returns the loss to use."""
    objective_loss = train_ddpm.DDPMObjective.loss
    steps = []

    def loss(self, model, clean, generator=None):
        value = objective_loss(self, model, clean, generator)
        if generator is not None:
            return value
        steps.append(len(steps) + 1)
        return change(steps[-1], value)

    monkeypatch.setattr(train_ddpm.DDPMObjective, "loss", loss)


@pytest.fixture(scope="module")
def uninterrupted_accumulating(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted_accumulating") / "run"
    train_in_process(folder, "--gradient_accumulation_steps", 2)
    return folder


# Accumulating: the signal comes in the first micro-batch of step 4, which advanced accelerate's accumulation counter;
# left so, the resumed run would update after every odd micro-batch.
@pytest.mark.parametrize("accumulation", [1, 2])
def test_ctrl_c_gives_up_the_step_in_flight_writes_the_checkpoint_before_it_and_resumes_exactly(accumulation, request, tmp_path, monkeypatch):
    uninterrupted = request.getfixturevalue("uninterrupted" if accumulation == 1 else "uninterrupted_accumulating")
    folder = tmp_path / "stopped"
    flags = ("--gradient_accumulation_steps", accumulation)
    handler = signal.getsignal(signal.SIGINT)
    def press_ctrl_c_in_step_4(micro_batch, loss):
        if micro_batch == 3 * accumulation + 1:  # after the forward pass: the backward pass is given up
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    _patch_training_loss(monkeypatch, press_ctrl_c_in_step_4)
    with pytest.raises(TrainingStopped) as stopped:
        train_in_process(folder, *flags)
    assert stopped.value.exit_code == 130
    assert str(stopped.value) == ("SIGINT received during step 4: gave that step up; checkpoint-3 holds the run after "
                                  "step 3; to go on, rerun the same command with --resume_from_checkpoint latest.")
    assert checkpoints(folder) == ["checkpoint-2", "checkpoint-3"] and not (folder / "model_index.json").exists()
    assert signal.getsignal(signal.SIGINT) is handler  # the handler is given back
    monkeypatch.undo()
    train_in_process(folder, *flags, "--resume_from_checkpoint", "latest")
    assert same_tensors(unet_weights(uninterrupted), unet_weights(folder))


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    _patch_training_loss(monkeypatch, lambda step, loss: loss * float("nan") if step == 3 else loss)
    # Checked at host syncs only (every --logging_steps 2 and at checkpoints), not after every step.
    with pytest.raises(TrainingStopped) as stopped:
        train_in_process(folder)
    assert stopped.value.exit_code == 1
    message = str(stopped.value)
    assert message.startswith("the loss was not finite at step 3; stopped at step 4 without saving, the last checkpoint (checkpoint-2) is intact.")
    assert "--skip_nonfinite" in message
    assert checkpoints(folder) == ["checkpoint-2"] and not (folder / "model_index.json").exists()
    assert all(torch.isfinite(t).all() for t in load_file(folder / "checkpoint-2" / "model" / "diffusion_pytorch_model.safetensors").values())
    assert [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [2]  # no NaN logged


def test_a_non_finite_loss_before_any_checkpoint_names_no_checkpoint_to_resume(tmp_path, monkeypatch):
    _patch_training_loss(monkeypatch, lambda step, loss: loss * float("nan") if step == 1 else loss)
    with pytest.raises(TrainingStopped) as stopped:
        train_in_process(tmp_path / "run")
    assert str(stopped.value) == (
        "the loss was not finite at step 1; stopped at step 2 before any checkpoint was written, so there is nothing "
        "to resume: start afresh (--overwrite_output_dir) with a lower --learning_rate, a smaller --max_grad_norm, or "
        "--skip_nonfinite (skips such steps).")
    assert checkpoints(tmp_path / "run") == []


def test_skip_nonfinite_skips_exactly_the_bad_steps(uninterrupted, tmp_path, monkeypatch, capsys):
    _patch_training_loss(monkeypatch, lambda step, loss: loss * float("nan") if step in (5, 6) else loss)
    folder = tmp_path / "skipping"
    train_in_process(folder, "--skip_nonfinite")
    assert "step 5: non-finite loss, update skipped (--skip_nonfinite)" in capsys.readouterr().out
    # Steps 5 and 6 changed nothing: the weights are those after step 4 of the uninterrupted run.
    after_step_4 = load_file(uninterrupted / "checkpoint-4" / "model" / "diffusion_pytorch_model.safetensors")
    assert same_tensors(after_step_4, unet_weights(folder))
    losses = [record["loss"] for record in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if "loss" in record]
    assert math.isfinite(losses[1]) and math.isnan(losses[2])  # the window of steps 5-6 had no loss to average


def test_pruning_keeps_the_checkpoint_just_written_and_ignores_cut_off_ones(tmp_path):
    from diffusion_lab.training.checkpoints import (
        complete_checkpoints,
        prune_checkpoints,
    )

    for name in ("checkpoint-2", "checkpoint-4", "checkpoint-6", "checkpoint-8.tmp"):
        (tmp_path / name).mkdir()
    # checkpoint-4 was just rewritten after resuming from checkpoint-2; 6 is left over from before.
    prune_checkpoints(tmp_path, keep=2, newest=tmp_path / "checkpoint-4")
    assert checkpoints(tmp_path) == ["checkpoint-4", "checkpoint-6", "checkpoint-8.tmp"]
    prune_checkpoints(tmp_path, keep=1, newest=tmp_path / "checkpoint-4")
    assert [path.name for path in complete_checkpoints(tmp_path)] == ["checkpoint-4"]


def test_sampling_writes_each_batch_as_it_is_made_and_an_interrupted_run_keeps_it(tmp_path, monkeypatch, capsys):
    from diffusers import DDPMPipeline, DDPMScheduler

    from diffusion_lab.commands import run_command, sample
    from diffusion_lab.models import build_model
    from diffusion_lab.pipelines.export import save_pipeline

    torch.manual_seed(0)
    save_pipeline(DDPMPipeline(unet=build_model("cnn", 28, 1, 1000, None), scheduler=DDPMScheduler()), tmp_path / "pipeline")
    flags = [str(tmp_path / "pipeline"), "--num_images", "5", "--batch_size", "2", "--num_inference_steps", "2"]
    sample.main([*flags, "--output_dir", str(tmp_path / "whole")])
    whole = np.load(tmp_path / "whole" / "samples.npz")["images"]
    assert whole.shape == (5, 28, 28, 1) and sorted(os.listdir(tmp_path / "whole")) == ["grid.png", "images", "samples.npz"]
    assert len(os.listdir(tmp_path / "whole" / "images")) == 5

    from diffusion_lab.sampling import sample_files

    real_batches = sample_files.generate_batches

    def interrupted_after_two_batches(*args, **kwargs):
        # closing(): the real generator's progress bar ends here, not when the garbage collector frees this frame (an open
        # bar moves the next test's bar down a line and puts a cursor-up code before the line printed after it)
        with closing(real_batches(*args, **kwargs)) as batches:
            yield next(batches)
            yield next(batches)
            raise KeyboardInterrupt

    monkeypatch.setattr(sample_files, "generate_batches", interrupted_after_two_batches)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_command(sample.main, [*flags, "--output_dir", str(tmp_path / "cut")])
    partial = tmp_path / "cut" / "partial"
    assert exit_info.value.code == 130
    assert f"stopped: interrupted: the 4 of 5 images made so far are in {partial}/" in capsys.readouterr().err.strip().splitlines()[-1]
    assert sorted(os.listdir(partial / "images")) == [f"{index:05d}.png" for index in range(4)]
    assert np.array_equal(np.load(partial / "samples.npy")[:4], whole[:4])  # the same images as the whole run's
