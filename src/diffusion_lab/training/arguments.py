"""Command-line flags shared by train_ddpm.py and train_cold.py.

Names follow diffusers' examples/unconditional_image_generation/train_unconditional.py where a flag exists
there, so its users feel at home.
"""

from __future__ import annotations

import argparse
import os

from ..argument_types import (
    dataset_path,
    fraction,
    non_negative_float,
    non_negative_int,
    open_unit_interval,
    path_name,
    positive_float,
    positive_int,
    seed,
)
from .run_folder import check_output_apart_from_inputs

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


class ArgumentError(ValueError):
    """A flag with a value the trainer cannot use; the message names the flag and the fix."""


def add_training_args(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", type=dataset_path, default=None, help="Hub dataset id or local dataset folder (parquet, save_to_disk, image folder). Default: the shipped MNIST.")
    data.add_argument("--train_data_dir", type=dataset_path, default=None, help="A folder of images (datasets' imagefolder layout).")
    data.add_argument("--image_column", default="image")
    data.add_argument("--resolution", type=positive_int, default=None, help="Image side in pixels (default 28, MNIST's); the model's sample size must match it.")
    data.add_argument("--center_crop", action="store_true", help="Resize the shorter side and crop the centre; default resizes the whole image to a square.")
    data.add_argument("--random_flip", action="store_true", help="Flip training images horizontally at random (off for digits).")
    data.add_argument("--validation_fraction", type=open_unit_interval, default=0.05, help="Held-out fraction when the dataset has no test/validation split.")
    data.add_argument(
        "--max_validation_samples", type=positive_int, default=1024,
        help="Validation loss over this fixed subset of the held-out images, with the same noise and timesteps every "
             "epoch (default 1024: within 2%% of the loss over all 10,000 MNIST test images, in seconds).",
    )
    data.add_argument("--max_train_samples", type=positive_int, default=None, help="Use only the first N training images (quick experiments, tests).")
    data.add_argument("--class_conditional", action="store_true", help="Train a class-conditional model (labels from --label_column) for classifier-free guidance.")
    data.add_argument("--label_column", default="label", help="--class_conditional: the column of integer or ClassLabel class labels.")
    data.add_argument("--label_dropout", type=fraction, default=0.1, help="--class_conditional, --cluster_conditioning: probability that a label is replaced by the null class (Ho & Salimans 2022).")
    data.add_argument(
        "--data_on_device", action=argparse.BooleanOptionalAction, default=None,
        help="Keep the decoded training images on the accelerator and gather, convert and flip batches there (default: "
             "on CUDA when they take at most a quarter of its free memory, MNIST 47 MB; off on a CPU, where it gains nothing).",
    )

    model = parser.add_argument_group("model")
    model.add_argument("--model", default="cnn", help="cnn | cnn_large | cnn_report | unet | unet_mnist | unet_fast | unet_small | unet_cifar10 | unet_fgvc_aircraft.")
    model.add_argument("--model_config_name_or_path", type=path_name, default=None, help="A UNet2DModel config (folder or json) instead of a preset.")
    model.add_argument("--dropout", type=fraction, default=None, help="UNet dropout probability, e.g. 0.01 (the U-Net report's). Default: the preset's (0 for MNIST, 0.1 for CIFAR-10).")

    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", type=path_name, default=None, help="Where the pipeline, checkpoints, logs and samples go.")
    run.add_argument("--overwrite_output_dir", action="store_true", help="Allow writing into a folder that holds another run.")
    run.add_argument("--seed", type=seed, default=0)
    run.add_argument("--train_batch_size", type=positive_int, default=128)
    run.add_argument("--eval_batch_size", type=positive_int, default=64, help="Images in each sample grid and validation batch.")
    run.add_argument("--num_epochs", type=positive_int, default=10)
    run.add_argument("--max_train_steps", type=positive_int, default=None, help="Total optimizer steps; overrides --num_epochs.")
    run.add_argument("--gradient_accumulation_steps", type=positive_int, default=1)
    run.add_argument("--learning_rate", type=positive_float, default=2e-4)
    run.add_argument("--lr_scheduler", default="constant", help="Any diffusers.optimization scheduler: constant, cosine, linear, ...")
    run.add_argument("--lr_warmup_steps", type=non_negative_int, default=0)
    run.add_argument("--optimizer", choices=("adam", "adamw"), default="adam")
    run.add_argument("--adam_beta1", type=fraction, default=0.9)
    run.add_argument("--adam_beta2", type=fraction, default=0.999)
    run.add_argument("--adam_weight_decay", type=non_negative_float, default=0.0)
    run.add_argument("--adam_epsilon", type=positive_float, default=1e-8)
    run.add_argument("--max_grad_norm", type=non_negative_float, default=1.0, help="Gradient clipping norm; 0 disables clipping.")
    run.add_argument("--loss", choices=("mse", "l1", "smooth_l1"), default=None, help="Default: mse for DDPM, l1 for cold diffusion.")
    run.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=False, help="Keep an exponential moving average of the weights; it is what gets saved.")
    run.add_argument("--ema_inv_gamma", type=positive_float, default=1.0)
    run.add_argument("--ema_power", type=positive_float, default=3 / 4)
    run.add_argument("--ema_max_decay", type=fraction, default=0.9999)
    run.add_argument(
        "--mixed_precision", choices=("auto", "no", "fp16", "bf16"), default="auto",
        help="auto (default): the launcher's fp16/bf16 if it was configured with one, else bf16 where the hardware runs it "
             "natively (CPUs with AVX512-BF16/AMX, GPUs with bf16), else fp32. 'no' forces fp32.",
    )
    run.add_argument("--torch_compile", action="store_true", help="torch.compile the model for training; the first step compiles it (1 min for the CNN, 6 for the UNet on 2 CPU cores), its time is logged as compile_seconds.")
    run.add_argument(
        "--torch_compile_mode", choices=COMPILE_MODES, default="default",
        help="torch.compile mode with --torch_compile: reduce-overhead captures the step's kernels in CUDA graphs, which "
             "suits the small models whose GPU step is bound by kernel launches.",
    )
    run.add_argument(
        "--cuda_graph", action="store_true",
        help="Capture the whole training step (batch, noise, forward, backward, clipping, fused AdamW, EMA) in one CUDA graph "
             "after 3 eager steps and replay it: the host no longer launches each kernel, which bounds small models' GPU "
             "steps. One CUDA process, no gradient accumulation, bf16 or fp32, the images on the device.",
    )
    run.add_argument("--channels_last", action="store_true", help="Keep the model's weights in channels-last memory format (NHWC), which cuDNN's fastest convolutions use.")
    run.add_argument("--allow_tf32", action=argparse.BooleanOptionalAction, default=True, help="TF32 matmuls and convolutions on CUDA GPUs (no effect on CPUs; off with --deterministic).")
    run.add_argument("--skip_nonfinite", action="store_true", help="Skip the update of a step whose loss is NaN/inf instead of stopping the run (costs a device sync per step).")
    run.add_argument("--deterministic", action="store_true", help="Deterministic GPU kernels, no cuDNN benchmarking, no TF32: repeatable GPU runs, somewhat slower (docs/determinism.md).")

    output = parser.add_argument_group("outputs")
    output.add_argument("--logger", choices=("tensorboard", "wandb", "none"), default="tensorboard")
    output.add_argument("--logging_steps", type=positive_int, default=10, help="Log loss and lr every N steps (each log syncs with the device).")
    output.add_argument("--save_images_epochs", type=positive_int, default=1, help="Write a sample grid every N epochs.")
    output.add_argument("--save_model_epochs", type=positive_int, default=1, help="Save the pipeline every N epochs (and at the end).")
    output.add_argument("--num_inference_steps", type=positive_int, default=None, help="Sampling steps for the grids and in-training evaluation (default: the sampler's, see --sampler; cold diffusion: every level).")
    output.add_argument("--checkpointing_steps", type=positive_int, default=500)
    output.add_argument(
        "--checkpointing_minutes", type=non_negative_float, default=5.0,
        help="Also write a checkpoint once this many minutes of training have passed since the last one (0: never), so "
             "that a long run never has more than that much work unsaved, whatever --checkpointing_steps is.",
    )
    output.add_argument("--checkpoints_total_limit", type=positive_int, default=None)
    output.add_argument("--keep_epoch_checkpoints", action="store_true", help="Also write a checkpoint at the end of every epoch and keep it: one per epoch, never pruned by --checkpoints_total_limit.")
    output.add_argument("--resume_from_checkpoint", type=path_name, default=None, help="'latest' or a checkpoint folder.")
    output.add_argument(
        "--allow_unchecked_resume", action="store_true",
        help="Resume a checkpoint that lacks its manifest.json or run_config.json (an older diffusion-lab's), whose files "
             "and settings therefore cannot be checked; refused without it.",
    )
    output.add_argument("--eval_every_epochs", type=non_negative_int, default=0, help="Compute sample-quality metrics every K epochs (0: never).")
    output.add_argument("--eval_num_samples", type=positive_int, default=1000)
    output.add_argument("--inception_weights", type=path_name, default=None, help="FID Inception-v3 weights file for --eval_every_epochs (FID, IS ± std over 10 splits); default: torch hub's cache, if the file is there.")

    hub = parser.add_argument_group("hub")
    hub.add_argument("--push_to_hub", action="store_true")
    hub.add_argument("--hub_model_id", default=None)
    hub.add_argument("--hub_token", default=None, help="Avoid: a token on the command line is visible in `ps` and in the launcher's error messages. Set HF_TOKEN or run `hf auth login` instead. No token value is ever written to the run's files.")
    hub.add_argument("--hub_private_repo", action="store_true")
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks.")
    parser.set_defaults(recipe=None)  # train_ddpm.py: the device recipe its defaults came from (training/recipes.py)


# The files and folders a run reads (a --dataset_name or --model_config_name_or_path that is no local path is a Hub id).
INPUT_FLAGS = ("train_data_dir", "dataset_name", "model_config_name_or_path", "inception_weights")


def validate_training_args(args: argparse.Namespace) -> None:
    """Refuse values that make no sense together, before anything is written (each number's range and each path's
    length are checked where they are parsed: `argument_types`)."""
    check_output_apart_from_inputs(args.output_dir, {f"--{name}": getattr(args, name) for name in INPUT_FLAGS})
    if args.lr_warmup_steps > 0 and args.lr_scheduler == "constant":
        # diffusers' "constant" schedule ignores warm-up steps; say so rather than train without the warm-up asked for.
        raise ArgumentError(
            f"--lr_warmup_steps {args.lr_warmup_steps} has no effect with --lr_scheduler constant: "
            "use --lr_scheduler constant_with_warmup (or cosine, linear, ...)."
        )
    if args.dropout is not None:
        from ..models import CNN_VARIANTS

        if args.model in CNN_VARIANTS and args.model_config_name_or_path is None:
            raise ArgumentError(f"--dropout applies to the UNet presets, not to --model {args.model}: drop it or pick a UNet (e.g. --model unet).")
    if args.inception_weights is not None and not os.path.isfile(args.inception_weights):
        raise ArgumentError(f"--inception_weights {args.inception_weights} is not a file: pass the Inception weights file, or drop the flag.")
    if args.torch_compile_mode != "default" and not args.torch_compile:
        raise ArgumentError(f"--torch_compile_mode {args.torch_compile_mode} has no effect without --torch_compile: add it or drop the mode.")
    if args.push_to_hub and args.hub_model_id is None:
        raise ArgumentError("--push_to_hub needs --hub_model_id (e.g. your-name/ddpm-mnist).")


def training_warnings(args: argparse.Namespace) -> list[str]:
    """Flags that are accepted but deserve a word: a token on the command line."""
    from ..run_files import token_on_command_line_warning

    warnings = [token_on_command_line_warning(args)]
    return [warning for warning in warnings if warning]
