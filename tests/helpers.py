"""Helpers shared by the tests (fixtures live in conftest.py)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

def run_script(*args, env=None, timeout=600, cwd=None):
    """Run a command of the project in a fresh Python process; returns the CompletedProcess.

    A script of the repository (`train_ddpm.py`) is given by its full path, and the process runs in the test's own
    empty working folder (see `empty_working_directory`), never in the repository.
    """
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    args = [ROOT / arg if isinstance(arg, str) and arg.endswith(".py") and (ROOT / arg).is_file() else arg for arg in args]
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd or os.getcwd(), env=full_env, capture_output=True, text=True, timeout=timeout)


def record_host_reads(monkeypatch) -> list[str]:
    """From now on, every read of a tensor's value on the host (.item(), bool(), float(), ...) made from diffusion_lab's
    own files is listed in the returned list (torch's own reads, e.g. Adam's CPU step counters, are not)."""
    import torch

    reads = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(tensor, *rest, _name=name, _original=original):
            caller = sys._getframe(1).f_code.co_filename
            if "diffusion_lab" in caller:
                reads.append(f"{_name} in {caller}:{sys._getframe(1).f_lineno}")
            return _original(tensor, *rest)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


PROGRESS_BAR = re.compile(r"\[\d\d:\d\d[<,]")  # tqdm's "[00:01<00:02, ...]"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def shown_lines(stderr: str) -> list[str]:
    """The lines of `stderr` that are not progress bars (datasets' first read of a dataset draws some); a bar cut off
    by an error clears itself (spaces, cursor up), which shows nothing on a terminal."""
    shown = [ANSI_ESCAPE.sub("", line) for line in stderr.splitlines()]
    return [line for line in shown if line.strip() and not PROGRESS_BAR.search(line)]


TINY_RUN = ["--model", "cnn", "--max_train_samples", "256", "--train_batch_size", "32", "--eval_batch_size", "8",
            "--num_inference_steps", "4", "--logger", "none", "--logging_steps", "2", "--no-use_ema"]


def make_folder(root, count=12, size=(40, 30), mode="RGB"):
    """A folder of `count` random images of `size` (W, H) and `mode`."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(root / f"{i}.png")
    return root


def run_two_cpu_ranks(record_dir, port: int, *flags):
    """`tests/two_process_worker.py` as two CPU ranks under `accelerate launch --multi_gpu` (gloo), with `flags` for
    train_ddpm.py; each rank writes what it did into `record_dir`. The launcher runs on this Python (`-m`), whatever
    `accelerate` the PATH finds first."""
    return run_script(
        "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(port), ROOT / "tests" / "two_process_worker.py", record_dir, *flags,
        env={"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"},
    )


def run_with_diffusers_only(script: str, cwd, timeout: int = 180) -> str:
    """Run `script` (Python source) in a fresh process without the project on PYTHONPATH; returns its stdout, and fails
    the test with its stderr if it fails."""
    environment = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    environment.pop("PYTHONPATH", None)
    result = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=environment, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
