import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def decoded_image_cache(tmp_path_factory):
    """One decoded-image cache for the whole session, away from the user's."""
    os.environ["DIFFUSION_LAB_CACHE"] = str(tmp_path_factory.mktemp("image_cache"))


def run_script(*args, env=None, timeout=600, cwd=None):
    """Run a command of the project in a fresh Python process; returns the CompletedProcess.

    A script of the repository (`train_ddpm.py`) is given by its full path, and the process runs in the test's own
    empty working folder (see `empty_working_directory`), never in the repository.
    """
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    args = [ROOT / arg if isinstance(arg, str) and arg.endswith(".py") and (ROOT / arg).is_file() else arg for arg in args]
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd or os.getcwd(), env=full_env, capture_output=True, text=True, timeout=timeout)


TINY_RUN = ["--model", "cnn", "--max_train_samples", "256", "--train_batch_size", "32", "--eval_batch_size", "8",
            "--num_inference_steps", "4", "--logger", "none", "--logging_steps", "2", "--no-use_ema"]

sys.path.insert(0, str(ROOT))  # train_ddpm.py / train_cold.py live at the repository root


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps its state in process-wide singletons; a real run makes one Accelerator per process."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield


@pytest.fixture(autouse=True)
def empty_working_directory(tmp_path_factory, monkeypatch):
    """Every test runs in an empty folder of its own and must leave it empty: a command that reads a default input
    from, or writes a default output to, the current folder (an earlier `evaluation.json`...) fails its test instead
    of making another test flaky. Subprocesses started with `run_script` inherit this folder."""
    folder = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(folder)
    yield folder
    left = sorted(path.name for path in folder.iterdir())
    assert not left, f"the test wrote {left} into the working directory: pass explicit output paths"
