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


def run_script(*args, env=None, timeout=600):
    """Run a command of the project in a fresh Python process; returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


TINY_RUN = ["--model", "cnn", "--max_train_samples", "256", "--train_batch_size", "32", "--eval_batch_size", "8",
            "--num_inference_steps", "4", "--logger", "none", "--logging_steps", "2", "--no-use_ema"]

sys.path.insert(0, str(ROOT))  # train_ddpm.py / train_cold.py live at the repository root


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps its state in process-wide singletons; a real run makes one Accelerator per process."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
