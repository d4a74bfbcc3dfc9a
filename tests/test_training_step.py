"""The training step (training/step.py): the graphed step does the eager step's arithmetic with device operands only."""

import argparse

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from helpers import record_host_reads

from diffusion_lab.commands import run_command, train_ddpm
from diffusion_lab.data import ImageCache, ShardedBatches
from diffusion_lab.models import build_model
from diffusion_lab.training.arguments import ArgumentError
from diffusion_lab.training.ddpm_objective import DDPMObjective
from diffusion_lab.training.step import GraphedTrainingStep, TrainingStep, check_graphed_step, make_optimizer

BATCH, IMAGES = 16, 64


def _step(step_class, graphed: bool, mixed_precision="no", **flags):
    args = argparse.Namespace(
        gradient_accumulation_steps=1, random_flip=True, torch_compile=False, torch_compile_mode="default",
        skip_nonfinite=False, max_grad_norm=0.5, train_batch_size=BATCH, optimizer="adamw", learning_rate=2e-3,
        adam_beta1=0.9, adam_beta2=0.999, adam_weight_decay=1e-2, adam_epsilon=1e-8, cuda_graph=graphed, **flags,
    )
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=True)
    torch.manual_seed(0)
    model = build_model("cnn", 28, 1, 100)
    ema = EMAModel(model.parameters(), decay=0.999, use_ema_warmup=True, power=3 / 4, foreach=True)
    optimizer = make_optimizer(args, model.parameters(), accelerator.device, graphed=graphed)
    lr_scheduler = get_scheduler("constant_with_warmup", optimizer=optimizer, num_warmup_steps=3, num_training_steps=100)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    images = np.random.default_rng(0).integers(0, 256, (IMAGES, 1, 28, 28), dtype=np.uint8)
    objective = DDPMObjective(DDPMScheduler(num_train_timesteps=100))
    step = step_class(args, accelerator, objective, model, optimizer, lr_scheduler, ema, ImageCache(images),
                      ShardedBatches(IMAGES, BATCH, 1, 0, seed=0), IMAGES // BATCH)
    return step, model, ema, optimizer


def _train(step_class, graphed, mixed_precision, steps=6):
    step, model, ema, optimizer = _step(step_class, graphed, mixed_precision)
    torch.manual_seed(1)
    losses = [step(global_step)[0].item() for global_step in range(steps)]
    # The CNN's conv biases are followed by LayerNorm, which cancels them: their gradients are float rounding, which
    # Adam scales up to full-size steps, different for fused and foreach AdamW. Every other weight is compared.
    compared = [name for name, _ in model.named_parameters() if not name.endswith("conv.bias")]
    parameters = dict(model.named_parameters())
    shadows = dict(zip(parameters, ema.shadow_params))
    return (losses, [parameters[name].detach().clone() for name in compared], [shadows[name].clone() for name in compared],
            ema, optimizer)


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_the_graphed_step_trains_as_the_eager_step_does(mixed_precision):
    """Same batches, flips, noise and timesteps (drawn in the same order), same AdamW, clipping, LR warm-up and EMA, and
    bf16 autocast from its own context instead of accelerate's wrapper: the losses, weights and EMA weights agree to
    float rounding (fused vs foreach AdamW)."""
    eager = _train(TrainingStep, graphed=False, mixed_precision=mixed_precision)
    graphed = _train(GraphedTrainingStep, graphed=True, mixed_precision=mixed_precision)
    np.testing.assert_allclose(graphed[0], eager[0], rtol=1e-4)
    assert eager[0][0] != eager[0][-1]  # it trained
    # Where bf16 is emulated (CPUs without AVX512-BF16/AMX), the two autocast contexts round some gradients differently
    # (bf16 keeps 8 bits), and Adam, which divides by the gradient's size, turns that into update differences of up to
    # 7 % of one step (lr 2e-3) where a gradient is near zero (seen on a Zen 3 CPU). So under bf16 each weight must
    # agree within a quarter of one step; a missing or wrong step moves every weight by about a whole one.
    atol = 2e-3 / 4 if mixed_precision == "bf16" else 1e-6
    for graphed_weight, eager_weight in zip(graphed[1] + graphed[2], eager[1] + eager[2]):
        torch.testing.assert_close(graphed_weight, eager_weight, rtol=1e-4, atol=atol)
    assert graphed[3].optimization_step == eager[3].optimization_step == 6
    assert graphed[3].cur_decay_value == pytest.approx(eager[3].cur_decay_value)
    # The learning rate lives on the device and follows the warm-up: 3 warm-up steps, then 2e-3.
    learning_rate = graphed[4].param_groups[0]["lr"]
    assert isinstance(learning_rate, torch.Tensor) and learning_rate.item() == pytest.approx(2e-3)
    assert eager[4].param_groups[0]["lr"] == pytest.approx(2e-3)


def test_the_graphed_step_never_reads_a_tensor_on_the_host(monkeypatch):
    """What a CUDA graph needs: nothing in the step waits for the device (the capture would fail on CUDA)."""
    step, *_ = _step(GraphedTrainingStep, graphed=True)
    reads = record_host_reads(monkeypatch)
    for global_step in range(2):
        step(global_step)
    assert reads == []


def test_the_graphed_step_records_the_first_non_finite_loss_on_the_device():
    step, model, *_ = _step(GraphedTrainingStep, graphed=True)
    step(0)
    assert step.first_nonfinite_step.item() == 0
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    step(1)
    step(2)
    assert step.first_nonfinite_step.item() == 2  # the step number as the loop counts it (1-based)


def test_cuda_graph_is_refused_in_one_line_where_it_cannot_run():
    args = argparse.Namespace(cuda_graph=True, gradient_accumulation_steps=2, skip_nonfinite=False, torch_compile=False)
    with pytest.raises(ArgumentError, match=r"^--cuda_graph needs a CUDA device, one process, --gradient_accumulation_steps 1, "
                                           r"the training images on the device \(--data_on_device\): drop --cuda_graph"):
        check_graphed_step(args, 2, torch.device("cpu"), "bf16", data_on_device=False)
    check_graphed_step(argparse.Namespace(cuda_graph=False), 2, torch.device("cpu"), "fp16", data_on_device=False)  # not asked: no check


def test_train_ddpm_with_cuda_graph_on_a_cpu_exits_2_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_command(train_ddpm.main, ["--cuda_graph", "--max_train_steps", "1", "--output_dir", str(tmp_path / "run")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --cuda_graph needs a CUDA device: drop --cuda_graph or change the flags."]
    assert not (tmp_path / "run").exists()
