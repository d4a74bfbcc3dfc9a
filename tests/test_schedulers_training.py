"""Noise schedules in train_ddpm.py: flags, exported pipelines, and a DES run sampled from its reloaded pipeline."""

import argparse
import json

import pytest
import torch
from helpers import TINY_RUN, run_script, run_with_diffusers_only

from diffusion_lab.pipelines.export import load_pipeline
from diffusion_lab.schedulers import (
    EntropyScaledDDPMScheduler,
    GeometricDDPMScheduler,
    LinearDDPMScheduler,
)
from diffusion_lab.training.arguments import ArgumentError, add_training_args
from diffusion_lab.training.ddpm_objective import add_ddpm_args, build_ddpm_scheduler

SHORT_RUN = [*TINY_RUN, "--max_train_steps", "4", "--ddpm_num_steps", "50", "--overwrite_output_dir"]


def parse(*flags):
    parser = argparse.ArgumentParser()
    add_training_args(parser)
    add_ddpm_args(parser)
    return parser.parse_args(list(flags))


def test_flags_choose_the_schedule():
    assert type(build_ddpm_scheduler(parse())) is LinearDDPMScheduler  # the coursework's linear by default
    des = build_ddpm_scheduler(parse("--noise_schedule", "entropy_scaled", "--des_entropy_mode", "image", "--des_base_schedule", "geometric"))
    assert isinstance(des, EntropyScaledDDPMScheduler) and des.config.entropy_mode == "image"
    assert torch.equal(des.betas, GeometricDDPMScheduler().betas)
    assert build_ddpm_scheduler(parse("--ddpm_beta_schedule", "squaredcos_cap_v2")).config.beta_schedule == "squaredcos_cap_v2"
    with pytest.raises(ArgumentError, match="--noise_schedule and --ddpm_beta_schedule both choose the betas"):
        build_ddpm_scheduler(parse("--noise_schedule", "geometric", "--ddpm_beta_schedule", "linear"))


def test_geometric_run_exports_a_stock_scheduler_with_its_betas(tmp_path):
    result = run_script("train_ddpm.py", *SHORT_RUN, "--noise_schedule", "geometric", "--output_dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "DDPMScheduler"
    expected = GeometricDDPMScheduler(num_train_timesteps=50).betas
    assert torch.equal(torch.tensor(config["trained_betas"], dtype=torch.float32), expected)


def test_des_run_samples_from_the_reloaded_pipeline(tmp_path):
    output_dir = tmp_path / "des"
    result = run_script("train_ddpm.py", *SHORT_RUN, "--noise_schedule", "entropy_scaled", "--output_dir", output_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    noise_scale = json.loads((output_dir / "scheduler" / "scheduler_config.json").read_text())["noise_scale"]
    # MNIST batches of 32 have a pixel entropy near 1.85 bits: s = sigmoid(1.85) = 0.86.
    assert 0.84 < noise_scale < 0.89

    # A Hub user's view: diffusers only, the classes come from the folder's own code.
    script = f"""
import sys, numpy, torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained({str(output_dir)!r}, trust_remote_code=True)
assert type(pipe).__name__ == "EntropyScaledDDPMPipeline" and type(pipe.scheduler).__name__ == "EntropyScaledDDPMScheduler"
assert pipe.scheduler.init_noise_sigma == {noise_scale!r}
images = pipe(batch_size=2, num_inference_steps=10, output_type="np", generator=torch.Generator().manual_seed(0)).images
assert images.shape == (2, 28, 28, 1) and numpy.isfinite(images).all()
assert "diffusion_lab" not in sys.modules
print("ok")
"""
    assert run_with_diffusers_only(script, tmp_path).strip().endswith("ok")

    # With diffusion_lab installed, our own classes load it without running the folder's code.
    pipeline = load_pipeline(output_dir)
    assert isinstance(pipeline.scheduler, EntropyScaledDDPMScheduler) and pipeline.scheduler.init_noise_sigma == noise_scale
