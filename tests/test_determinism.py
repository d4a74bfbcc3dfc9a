"""Same seed, same machine, CPU: identical training weights, sample grids and samples, for every pipeline."""

import importlib
import os

import numpy as np
import pytest
import torch
from helpers import TINY_RUN
from safetensors.torch import load_file

from diffusion_lab.pipelines.export import load_pipeline

# Every kind of pipeline: (train script, its flags, the arguments the pipeline is sampled with here).
PIPELINES = {
    "ddpm": ("train_ddpm.py", [], {"num_inference_steps": 3}),
    "entropy_scaled": ("train_ddpm.py", ["--noise_schedule", "entropy_scaled"], {"num_inference_steps": 3}),
    "cold": ("train_cold.py", [], {}),
}


def train(pipeline, folder, *flags):
    script, script_flags, _ = PIPELINES[pipeline]
    module = importlib.import_module(script.removesuffix(".py"))
    module.main(["--output_dir", str(folder), *TINY_RUN, "--train_batch_size", "16", "--max_train_steps", "4", "--use_ema", *script_flags, *flags])


def saved_tensors(folder):
    """Pipeline weights and the EMA and raw weights of the last checkpoint."""
    pipeline_files = [path for path in folder.glob("*/*.safetensors") if not path.parent.name.startswith("checkpoint-")]
    files = [*pipeline_files, *folder.glob("checkpoint-4/**/*.safetensors")]
    return {f"{path.relative_to(folder)}:{name}": tensor for path in files for name, tensor in load_file(path).items()}


def samples(folder, pipeline_kind, seed):
    pipeline = load_pipeline(str(folder))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline(batch_size=2, generator=torch.Generator().manual_seed(seed), output_type="np", **PIPELINES[pipeline_kind][2]).images


@pytest.fixture
def global_torch_settings():
    """--deterministic changes process-wide settings: give them back after the test."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1:4]
    if saved[4] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


@pytest.mark.parametrize("pipeline", list(PIPELINES))
def test_the_same_seed_gives_identical_weights_grids_and_samples(pipeline, tmp_path, global_torch_settings):
    # Different checkpoint schedules and --deterministic must not change a CPU run.
    train(pipeline, tmp_path / "a", "--checkpointing_steps", "1")
    train(pipeline, tmp_path / "b", "--checkpointing_steps", "4", "--deterministic")
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    train(pipeline, tmp_path / "other_seed", "--checkpointing_steps", "4", "--seed", "1")

    first, second, other = (saved_tensors(tmp_path / name) for name in ("a", "b", "other_seed"))
    assert first.keys() == second.keys() and len(first) >= 3 * 10
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not all(torch.equal(first[key], other[key]) for key in first)
    grids = [sorted((tmp_path / name / "samples").glob("*.png")) for name in ("a", "b")]
    assert [path.read_bytes() for path in grids[0]] == [path.read_bytes() for path in grids[1]] and grids[0]
    assert np.array_equal(samples(tmp_path / "a", pipeline, seed=5), samples(tmp_path / "b", pipeline, seed=5))
    assert not np.array_equal(samples(tmp_path / "a", pipeline, seed=5), samples(tmp_path / "a", pipeline, seed=6))
