"""The GPU fast path, checked on the CPU: device-resident data, compile mode, channels-last weights."""

import argparse

import pytest
import torch
from accelerate.state import AcceleratorState

from diffusion_lab.data import keep_on_device
from diffusion_lab.training.arguments import (
    ArgumentError,
    add_training_args,
    validate_training_args,
)
from diffusion_lab.training.ddpm_objective import DDPMObjective, add_ddpm_args
from diffusion_lab.training.loop import Trainer

FLAGS = ["--model", "cnn", "--max_train_samples", "64", "--train_batch_size", "16", "--logger", "none",
         "--no-use_ema", "--mixed_precision", "no", "--random_flip"]


def make_trainer(folder, *flags):
    parser = argparse.ArgumentParser()
    add_training_args(parser)
    add_ddpm_args(parser)
    argv = [*FLAGS, "--output_dir", str(folder), *flags]
    args = parser.parse_args(argv)
    validate_training_args(args)
    AcceleratorState._reset_state(reset_partial_state=True)  # one Accelerator per trainer, as in a real process
    return Trainer(args, DDPMObjective.from_args(args), ["train_ddpm.py", *argv])


def two_steps(trainer):
    losses = []
    for _ in range(2):
        losses.append(trainer.step(trainer.global_step)[0].item())
        trainer.global_step += 1
    weights = [p.detach().clone() for p in trainer.eager_model.parameters()]
    trainer.release_run_folder()
    return losses, weights


def test_device_resident_data_trains_exactly_as_the_host_path(tmp_path):
    resident = make_trainer(tmp_path / "resident", "--data_on_device")
    assert isinstance(resident.train_data.images, torch.Tensor)  # moved once, gathered there
    resident_losses, resident_weights = two_steps(resident)
    host = make_trainer(tmp_path / "host", "--no-data_on_device")
    assert not isinstance(host.train_data.images, torch.Tensor)
    host_losses, host_weights = two_steps(host)
    assert resident_losses == host_losses
    assert all(torch.equal(a, b) for a, b in zip(resident_weights, host_weights))


def test_data_stays_on_the_host_of_a_cpu_unless_asked():
    assert not keep_on_device(None, torch.device("cpu"), 47_000_000)
    assert keep_on_device(True, torch.device("cpu"), 47_000_000)
    assert not keep_on_device(False, torch.device("cuda"), 1)


def test_compile_mode_and_channels_last_reach_the_model(tmp_path):
    trainer = make_trainer(tmp_path / "run", "--torch_compile", "--torch_compile_mode", "reduce-overhead", "--channels_last")
    try:
        assert trainer.accelerator.state.dynamo_plugin.mode == "reduce-overhead"
        assert isinstance(trainer.model, torch._dynamo.eval_frame.OptimizedModule)  # compiled lazily, at the first step
        convolutions = [p for p in trainer.eager_model.parameters() if p.dim() == 4]
        assert convolutions and all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions)
    finally:
        trainer.release_run_folder()


def test_compile_mode_without_compile_is_refused(tmp_path):
    with pytest.raises(ArgumentError, match="without --torch_compile"):
        make_trainer(tmp_path / "run", "--torch_compile_mode", "reduce-overhead")
