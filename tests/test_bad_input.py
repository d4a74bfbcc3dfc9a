"""Bad input to every command, tried systematically: one line on stderr, exit status 2, no traceback (unless
--debug), nothing existing overwritten. docs/troubleshooting.md lists these cases."""

import argparse
import errno
import importlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler
from helpers import TINY_RUN, make_folder, shown_lines
from safetensors.torch import load_file, save_file

from diffusion_lab.argument_types import Number
from diffusion_lab.commands import run_command, sample, train_cold, train_ddpm
from diffusion_lab.models import build_model
from diffusion_lab.pipelines.export import load_pipeline, save_pipeline

SMALL_RUN = [*TINY_RUN, "--max_train_samples", "32", "--train_batch_size", "8"]
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
LONG_NAME = "x" * 300  # more than the 255 bytes a file name may have on common file systems
TOO_MUCH = 10**7  # images per batch: terabytes of activations


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    """A finished two-step run (checkpoint-2 and its pipeline) and a pipeline folder, shared by the cases."""
    root = tmp_path_factory.mktemp("bad_input")
    run = root / "run"
    train_ddpm.main(["--output_dir", str(run), *SMALL_RUN, "--max_train_steps", "2", "--checkpointing_steps", "2"])
    torch.manual_seed(0)
    pipeline = root / "pipeline"
    save_pipeline(DDPMPipeline(unet=build_model("cnn", 28, 1, 1000, None), scheduler=DDPMScheduler()), pipeline)
    return SimpleNamespace(root=root, run=run, pipeline=pipeline)


def snapshot(*folders):
    return {path: path.read_bytes() for folder in folders for path in folder.rglob("*") if path.is_file()}


def existing_folders(c, argv):
    """The folders a command is given that exist already: none of their files may change."""
    return [c.run, c.pipeline, *(arg for arg in argv if isinstance(arg, Path) and os.path.isdir(arg))]  # no raise on a name too long


def run_and_read_error(main, argv, capsys):
    """Run a command as its console script would; returns (exit status, the stderr lines that are not progress bars)."""
    capsys.readouterr()  # drop the output of the setup
    with pytest.raises(SystemExit) as exit_info:
        run_command(main, list(map(str, argv)))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return exit_info.value.code, shown_lines(err)


def fresh(c, name):
    return c.root / f"{name}-{len(list(c.root.iterdir()))}"


def image_folder(c, damage=None):
    folder = make_folder(fresh(c, "images"), count=8, size=(20, 20))
    if damage:
        damage(folder / "3.png")
    return folder


def empty_parquet(c):
    folder = fresh(c, "parquet")
    folder.mkdir()
    datasets.Dataset.from_dict({"image": []}, features=datasets.Features({"image": datasets.Image()})).to_parquet(str(folder / "train.parquet"))
    return folder


def labels_only(c):
    folder = fresh(c, "labels")
    datasets.Dataset.from_dict({"label": list(range(8))}).save_to_disk(str(folder))
    return folder


def empty_folder(c):
    folder = fresh(c, "empty")
    folder.mkdir()
    return folder


def a_file(c):
    path = fresh(c, "file")
    path.write_text("not a folder")
    return path


def damaged_run(c):
    copy = fresh(c, "damaged")
    shutil.copytree(c.run, copy)
    (copy / "checkpoint-2" / "optimizer.bin").unlink()
    return copy


def parquet_with_a_null_image(c):
    import io

    from PIL import Image

    folder = fresh(c, "parquet")
    folder.mkdir()
    png = io.BytesIO()
    Image.new("L", (16, 16), 100).save(png, format="PNG")
    rows = {"image": [{"bytes": png.getvalue(), "path": None}] * 3 + [None]}
    datasets.Dataset.from_dict(rows, features=datasets.Features({"image": datasets.Image()})).to_parquet(str(folder / "train.parquet"))
    return folder


TRAIN_CASES = {
    "missing dataset folder": (lambda c: ["--dataset_name", c.root / "no" / "such"], "dataset folder"),
    "missing image folder": (lambda c: ["--train_data_dir", c.root / "nothing"], "is not a folder"),
    "empty image folder": (lambda c: ["--train_data_dir", empty_folder(c)], "holds no data"),
    "empty dataset (parquet)": (lambda c: ["--dataset_name", empty_parquet(c)], "holds no data"),
    "corrupt image file": (lambda c: ["--train_data_dir", image_folder(c, lambda p: p.write_bytes(b"not an image")), "--resolution", 16], "3.png) cannot be decoded"),
    "truncated image file": (lambda c: ["--train_data_dir", image_folder(c, lambda p: p.write_bytes(p.read_bytes()[:200])), "--resolution", 16], "image file is truncated"),
    "wrong --image_column": (lambda c: ["--image_column", "picture"], "column 'picture' not found (columns: image, label)"),
    "column without images": (lambda c: ["--dataset_name", labels_only(c), "--image_column", "label"], "holds int, not images"),
    "--beta_end not above --beta_start": (lambda c: ["--beta_start", 0.02, "--beta_end", 0.01], "--beta_end 0.01 must be larger than --beta_start 0.02"),
    "resolution the model cannot take": (lambda c: ["--resolution", 30, "--model", "unet"], "cannot take 30x30 images"),
    "--output_dir under a file": (lambda c: ["--output_dir", a_file(c) / "out"], "cannot write to --output_dir"),
    "--output_dir is a file": (lambda c: ["--output_dir", a_file(c)], "is a file"),
    "--output_dir of another run": (lambda c: ["--output_dir", c.run], "already holds a run"),
    "resume without a checkpoint": (lambda c: ["--output_dir", fresh(c, "new"), "--resume_from_checkpoint", "latest"], "no complete checkpoint"),
    "resume from a cut-off checkpoint": (lambda c: ["--output_dir", c.run, "--resume_from_checkpoint", c.run / "checkpoint-4.tmp"], "is not a complete checkpoint folder"),
    "resume from a damaged checkpoint": (lambda c: ["--output_dir", damaged_run(c), "--resume_from_checkpoint", "latest"], "is damaged (missing optimizer.bin)"),
    "--mixed_precision fp16 on a CPU": (lambda c: ["--mixed_precision", "fp16"], "--mixed_precision fp16 needs a GPU: on a CPU the run would train in fp32"),
    "dataset too small to hold out validation": (lambda c: ["--train_data_dir", make_folder(fresh(c, "one"), count=1, size=(20, 20)), "--resolution", 16], "has 1 image(s) and no test/validation split: too few to hold out --validation_fraction 0.05"),
    "a null image in a parquet": (lambda c: ["--dataset_name", parquet_with_a_null_image(c), "--resolution", 16, "--validation_fraction", 0.25], "image 3 is empty (null in the dataset): remove or fill that row"),
    "resume past --max_train_steps": (lambda c: ["--output_dir", c.run, "--resume_from_checkpoint", "latest", "--max_train_steps", 1], "checkpoint-2 is past the 1 steps"),
    "--output_dir name too long": (lambda c: ["--output_dir", c.root / LONG_NAME], "--output_dir: the file name xxxxxxxxxxxxxxxxxxxx... is 300 bytes long, more than the 255"),
    "--train_data_dir name too long": (lambda c: ["--train_data_dir", c.root / LONG_NAME / "images"], "--train_data_dir: the file name"),
    "--eval_batch_size that cannot fit in memory": (lambda c: ["--eval_batch_size", TOO_MUCH], f"--eval_batch_size {TOO_MUCH} needs up to"),
    "--eval_num_samples that cannot fit in memory": (lambda c: ["--eval_every_epochs", 1, "--eval_num_samples", 10**12], "--eval_num_samples 1000000000000 need up to"),
}

# Every numeric flag of each train script with a value it must refuse (test_every_numeric_flag_has_a_case keeps
# these complete): (flag, value, message, flags it needs).
SHARED_NUMERIC_CASES = [
    *[(flag, 0, "must be a positive integer") for flag in (
        "train_batch_size", "eval_batch_size", "num_epochs", "max_train_steps", "gradient_accumulation_steps", "logging_steps",
        "save_images_epochs", "save_model_epochs", "checkpointing_steps", "checkpoints_total_limit", "eval_num_samples",
        "max_train_samples", "max_validation_samples", "resolution", "num_inference_steps")],
    *[(flag, -1, "must not be negative") for flag in ("lr_warmup_steps", "adam_weight_decay", "max_grad_norm", "eval_every_epochs", "checkpointing_minutes")],
    ("seed", -1, "must be between 0 and 4294967295"),
    ("learning_rate", 0, "must be a positive number"),
    ("adam_beta1", 1, "must be in [0, 1)"),
    ("adam_beta2", -0.1, "must be in [0, 1)"),
    ("ema_max_decay", 1.5, "must be in [0, 1)"),
    ("adam_epsilon", 0, "must be a positive number"),
    ("ema_inv_gamma", 0, "must be a positive number"),
    ("ema_power", -1, "must be a positive number"),
    ("validation_fraction", 1, "must be in (0, 1)"),
    *[(flag, "nan", "must be a finite number") for flag in ("adam_weight_decay", "max_grad_norm", "ema_inv_gamma", "ema_power", "adam_epsilon", "checkpointing_minutes")],
    ("learning_rate", "inf", "must be a finite number"),
    ("lr_warmup_steps", 100, "has no effect with --lr_scheduler constant: use --lr_scheduler constant_with_warmup", "--lr_scheduler", "constant"),
    ("validation_fraction", "nan", "must be a finite number"),
    ("max_validation_samples", 0, "must be a positive integer"),
    ("label_dropout", 1, "must be in [0, 1)"),
    ("label_dropout", "nan", "must be a finite number"),
    ("dropout", 1, "must be in [0, 1)", "--model", "unet_fast"),
]
SCRIPT_NUMERIC_CASES = {
    "train_ddpm.py": [
        ("ddpm_num_steps", 1, "must be at least 2"),
        ("beta_start", 0, "must be in (0, 1)"),
        ("beta_end", 1.5, "must be in (0, 1)"),
        ("beta_end", "nan", "must be a finite number"),
        ("snr_gamma", -1, "must not be negative"),
        ("snr_gamma", "nan", "must be a finite number"),
        ("logit_mean", "nan", "must be a finite number", "--timestep_sampling", "logit_normal"),
        ("logit_std", 0, "must be a positive number", "--timestep_sampling", "logit_normal"),
        ("autoguidance_scale", -1, "must not be negative"),
        ("autoguidance_scale", "inf", "must be a finite number"),
        ("autoguidance_guide_fraction", 0, "must be in (0, 1)"),
        ("autoguidance_guide_fraction", 1, "must be in (0, 1)"),
        ("cluster_conditioning", -1, "must not be negative"),
        ("cluster_conditioning", 2.5, "is not an integer"),
    ],
    "train_cold.py": [
        ("group_size", 0, "--group_size 0 must be a positive integer"),
        ("num_levels", 0, "--num_levels 0 must be a positive integer", "--degradation", "blur"),
        ("kernel_size", 4, "kernel_size 4 a positive odd number", "--degradation", "blur"),
        ("kernel_std", -1, "give a non-positive std", "--degradation", "blur"),
        ("kernel_std", "nan", "must be a finite number", "--degradation", "blur"),
        ("kernel_std_growth", -1, "give a non-positive std", "--degradation", "blur"),
        ("block_sizes", 0, "--block_sizes 0 must be a positive integer", "--degradation", "pixelate"),
        ("rings_per_level", 0, "--rings_per_level 0 must be a positive integer", "--degradation", "mask"),
        ("group_size", 29, "group_size 29 must lie in 1..28"),
        ("fill_value", "nan", "--fill_value nan must be a finite number", "--degradation", "mask"),
        ("fill_value", 2, "--fill_value 2 must be between -1 and 1", "--degradation", "mask"),
        ("start_components", 0, "--start_components 0 must be a positive integer"),
        ("start_samples", 5, "--start_samples 5 must be at least --start_components 10"),
        ("start_samples", 0, "--start_samples 0 must be a positive integer"),
        ("noise", -1, "--noise -1 must not be negative"),
        ("noise", "nan", "must be a finite number"),
    ],
}
# Numeric flags with no invalid number.
ANY_NUMBER = {"order_seed"}  # any integer seeds the random order
ARGUMENT_ADDERS = {"train_ddpm.py": "add_ddpm_args", "train_cold.py": "add_cold_args"}
SCRIPTS = list(SCRIPT_NUMERIC_CASES)
NUMERIC_CASES = [(script, case) for script in SCRIPTS for case in SHARED_NUMERIC_CASES + SCRIPT_NUMERIC_CASES[script]]


def script_module(script):
    return importlib.import_module(f"diffusion_lab.commands.{script.removesuffix('.py')}")


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_refuses_bad_input_in_one_line(case, ctx, capsys):
    make_argv, message = TRAIN_CASES[case]
    argv = ["--output_dir", fresh(ctx, "out"), *SMALL_RUN, "--max_train_steps", 1, *make_argv(ctx)]
    before = snapshot(*existing_folders(ctx, argv))
    status, lines = run_and_read_error(train_ddpm.main, argv, capsys)
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert all(path.read_bytes() == data for path, data in before.items())


@pytest.mark.parametrize("script, case", NUMERIC_CASES, ids=[f"{script}:{case[0]}={case[1]}" for script, case in NUMERIC_CASES])
def test_train_refuses_invalid_numbers(script, case, ctx, capsys):
    flag, value, message, *needs = case
    argv = ["--output_dir", fresh(ctx, "out"), *SMALL_RUN, *needs, f"--{flag}", value]
    status, lines = run_and_read_error(script_module(script).main, argv, capsys)
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: --") and flag in lines[0] and message in lines[0], lines


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_numeric_flag_has_a_case(script):
    module, parser = script_module(script), argparse.ArgumentParser()
    module.add_training_args(parser)
    getattr(module, ARGUMENT_ADDERS[script])(parser)
    numeric = {action.dest for action in parser._actions if isinstance(action.type, Number)} - ANY_NUMBER
    assert numeric == {case[0] for case in SHARED_NUMERIC_CASES + SCRIPT_NUMERIC_CASES[script]}


def test_a_value_that_is_no_number_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_command(train_ddpm.main, ["--train_batch_size", "many"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["error: --train_batch_size many is not an integer: it must be a positive integer."]


def test_debug_shows_the_traceback(ctx):
    with pytest.raises(ValueError, match="column 'picture' not found"):
        run_command(train_ddpm.main, ["--output_dir", str(fresh(ctx, "out")), *SMALL_RUN, "--image_column", "picture", "--debug"])


def test_mixed_image_sizes_and_modes_are_resized_and_converted(ctx):
    folder = make_folder(fresh(ctx, "mixed"), count=6, size=(20, 20))  # RGB first: the data becomes RGB
    from PIL import Image

    Image.new("L", (33, 17), 200).save(folder / "6.png")
    Image.new("RGBA", (16, 16), (10, 20, 30, 0)).save(folder / "7.png")
    Image.new("P", (50, 40)).save(folder / "8.png")
    Image.new("I;16", (10, 12)).save(folder / "9.png")
    output_dir = fresh(ctx, "out")
    train_ddpm.main(["--output_dir", str(output_dir), *SMALL_RUN, "--train_data_dir", str(folder), "--resolution", "16",
                     "--validation_fraction", "0.2", "--train_batch_size", "2", "--max_train_steps", "1"])
    from diffusion_lab.data import load_image_caches

    train, validation = load_image_caches(train_data_dir=str(folder), resolution=16, validation_fraction=0.2)
    images = {tuple(image.reshape(3, -1)[:, 0]) for image in [*train.images, *validation.images]}
    assert train.images.shape[1:] == (3, 16, 16) and len(train) + len(validation) == 10
    assert (200, 200, 200) in images and (10, 20, 30) in images  # gray and RGBA converted to RGB
    assert load_pipeline(str(output_dir)).unet.config.in_channels == 3


@contextmanager
def file_size_limit(limit):
    """Writes past `limit` bytes fail (EFBIG) as they do on a full disk, from Python, torch.save and safetensors."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@pytest.mark.parametrize("write, flags", [
    ("checkpoint-3", ["--checkpointing_steps", "3"]),
    ("the pipeline", ["--checkpointing_steps", "100"]),
])
def test_a_full_disk_stops_with_one_line_and_keeps_what_was_saved(write, flags, ctx, capsys):
    folder = fresh(ctx, "full")
    shutil.copytree(ctx.run, folder)
    saved = snapshot(folder / "checkpoint-2", folder / "unet", folder / "scheduler")
    saved[folder / "model_index.json"] = (folder / "model_index.json").read_bytes()
    with file_size_limit(64 * 1024):
        status, lines = run_and_read_error(
            train_ddpm.main, ["--output_dir", folder, *SMALL_RUN, "--max_train_steps", 3, "--resume_from_checkpoint", "latest", *flags], capsys)
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: could not write {write}") and "File too large (os error 27)): free disk space" in lines[0]
    assert {path: data for path, data in snapshot(folder).items() if path in saved} == saved  # nothing saved before changed
    assert folder / "checkpoint-2" / "optimizer.bin" in saved and folder / WEIGHTS in saved
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))  # the partial write is cleaned up
    load_pipeline(str(folder))


def metrics_on_a_full_disk(c):
    """A copy of the run whose metrics.jsonl sits on a full disk (/dev/full: every write fails with ENOSPC)."""
    folder = fresh(c, "full")
    shutil.copytree(c.run, folder)
    (folder / "metrics.jsonl").unlink()
    (folder / "metrics.jsonl").symlink_to("/dev/full")
    return ["--output_dir", folder, "--resume_from_checkpoint", "latest", "--max_train_steps", 3, "--checkpointing_steps", 100]


def metrics_not_writable(c, monkeypatch):
    """A fresh run whose folder stops being writable at the first metrics line (as root, chmod would not stop us)."""
    from diffusion_lab.training import loop

    def refuse(self, values, step):
        raise PermissionError(errno.EACCES, "Permission denied", str(self.run_dir / "metrics.jsonl"))

    monkeypatch.setattr(loop.MetricsLog, "log", refuse)
    return ["--output_dir", fresh(c, "out"), "--max_train_steps", 2, "--checkpointing_steps", 100]


@pytest.mark.parametrize("make_argv, message", [
    (lambda c, monkeypatch: metrics_on_a_full_disk(c),
     "(No space left on device); the last checkpoint (checkpoint-2) is intact: make {folder} writable (or free disk space), then "
     "rerun the same command with --resume_from_checkpoint latest."),
    (metrics_not_writable,
     "metrics.jsonl (Permission denied); no checkpoint was written yet, so there is nothing to resume: make {folder} writable"),
], ids=["disk full after a checkpoint", "permission denied before any checkpoint"])
def test_a_run_folder_that_becomes_unwritable_stops_with_one_line_naming_the_last_checkpoint(make_argv, message, ctx, capsys, monkeypatch):
    argv = [*SMALL_RUN, *make_argv(ctx, monkeypatch)]
    folder = argv[argv.index("--output_dir") + 1]
    saved = snapshot(folder / "checkpoint-2")  # empty for a fresh run
    status, lines = run_and_read_error(train_ddpm.main, argv, capsys)
    assert status == 1 and len(lines) == 1 and lines[0].startswith(f"stopped: cannot write {folder}"), lines
    assert message.format(folder=folder) in lines[0], lines
    assert snapshot(folder / "checkpoint-2") == saved


def broken_pipeline(c, damage):
    folder = fresh(c, "pipeline")
    shutil.copytree(c.pipeline, folder)
    damage(folder)
    return folder


def rewrite_index(entries):
    return lambda folder: (folder / "model_index.json").write_text(json.dumps(entries))


def rewrite_weights(change):
    def damage(folder):
        tensors = load_file(folder / WEIGHTS)
        change(tensors)
        save_file(tensors, folder / WEIGHTS)
    return damage


def pickle_instead_of_safetensors(folder):
    torch.save(load_file(folder / WEIGHTS), folder / "unet" / "diffusion_pytorch_model.bin")
    (folder / WEIGHTS).unlink()


def samples_folder(c):
    folder = fresh(c, "samples")
    folder.mkdir()
    (folder / "samples.npz").write_bytes(b"earlier samples")
    return folder


def images_without_npz(c):
    """What a cut-off sampling run leaves: images and a grid, no samples.npz."""
    folder = fresh(c, "samples")
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "00000.png").write_bytes(b"earlier image")
    (folder / "grid.png").write_bytes(b"earlier grid")
    return folder


def nested_pipeline(folder):
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "inner": ["diffusers", "DDPMPipeline"]}))


def rewrite_config(component, **changes):
    def damage(folder):
        path = next((folder / component).glob("*config.json"))
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return damage


def set_first(name, value):
    return lambda tensors: tensors[name].view(-1).__setitem__(0, value)


UNET_CONFIG, SCHEDULER_CONFIG = "unet/config.json", "scheduler/scheduler_config.json"
# What a saved pipeline holds, checked before it is built or sampled: (damage, the one line's telling part).
SAVED_PIPELINE_CASES = {
    "a NaN weight": (rewrite_weights(set_first("blocks.0.conv.weight", float("nan"))), f"{WEIGHTS}: blocks.0.conv.weight holds NaN or infinite values"),
    "an infinite weight": (rewrite_weights(set_first("blocks.0.conv.bias", float("inf"))), f"{WEIGHTS}: blocks.0.conv.bias holds NaN or infinite"),
    "a weight out of range": (rewrite_weights(set_first("blocks.0.conv.weight", 1e9)), "blocks.0.conv.weight holds 1e+09, far beyond any trained weight"),
    "beta_end above 1": (rewrite_config("scheduler", beta_end=1.5), f"{SCHEDULER_CONFIG}: beta_end makes betas outside (0, 1)"),
    "negative trained_betas": (rewrite_config("scheduler", trained_betas=[0.01] * 999 + [-0.5]), f"{SCHEDULER_CONFIG}: trained_betas makes betas outside (0, 1) (-0.5)"),
    "num_train_timesteps as a string": (rewrite_config("scheduler", num_train_timesteps="1000"), f"{SCHEDULER_CONFIG}: num_train_timesteps is '1000', not a whole number"),
    "num_train_timesteps 10^9": (rewrite_config("scheduler", num_train_timesteps=10**9), "num_train_timesteps is 1000000000, outside 1..65536"),
    "a schedule setting of the wrong type": (rewrite_config("scheduler", clip_sample="yes"), f"{SCHEDULER_CONFIG}: clip_sample is 'yes', not true or false"),
    "a width of 10^9": (rewrite_config("unet", hidden_channels=[16, 10**9, 32, 16]), f"{UNET_CONFIG}: hidden_channels is 1000000000, outside 1..65536"),
    "widths whose model cannot be allocated": (rewrite_config("unet", hidden_channels=[60000] * 3 + [16]), "hidden_channels [60000, 60000, 60000, 16] gives a model of"),
    "kernel_size 0": (rewrite_config("unet", kernel_size=0), f"{UNET_CONFIG}: kernel_size is 0, outside 1..65536"),
    "sample_size 10^6": (rewrite_config("unet", sample_size=10**6), f"{UNET_CONFIG}: sample_size is 1000000, outside 1..4096"),
    "in_channels as a float": (rewrite_config("unet", in_channels=1.5), f"{UNET_CONFIG}: in_channels is 1.5, not a whole number"),
}

SAMPLE_CASES = {
    "pipeline folder missing": (lambda c: [c.root / "no" / "such"], "no such folder: "),
    "pipeline folder missing, a name with no owner/ (not a Hub id)": (lambda c: ["ddpm-mnsit"], "no such folder: ddpm-mnsit: check the path"),
    **{f"saved pipeline holding {case}": (lambda c, damage=damage: [broken_pipeline(c, damage)], message)
       for case, (damage, message) in SAVED_PIPELINE_CASES.items()},
    "Hub id unreachable (offline)": (lambda c: ["someone/no-such-pipeline"], "could not download pipeline 'someone/no-such-pipeline'"),
    "model_index.json missing": (lambda c: [broken_pipeline(c, lambda f: (f / "model_index.json").unlink())], "holds no model_index.json"),
    "model_index.json not JSON": (lambda c: [broken_pipeline(c, lambda f: (f / "model_index.json").write_text("{"))], "is not valid JSON"),
    "model_index.json malformed entry": (lambda c: [broken_pipeline(c, rewrite_index({"_class_name": "DDPMPipeline", "unet": ["diffusers"]}))], "malformed 'unet' entry"),
    "model_index.json names an unknown class": (lambda c: [broken_pipeline(c, rewrite_index({"_class_name": "os.system", "unet": ["diffusers", "UNet2DModel"]}))], "diffusion_lab does not know"),
    "component config not JSON": (lambda c: [broken_pipeline(c, lambda f: (f / "unet" / "config.json").write_text("{"))], "not a valid JSON file"),
    "safetensors file missing": (lambda c: [broken_pipeline(c, lambda f: (f / WEIGHTS).unlink())], "no file named diffusion_pytorch_model.safetensors"),
    "pickle (.bin) weights only": (lambda c: [broken_pipeline(c, pickle_instead_of_safetensors)], "no file named diffusion_pytorch_model.safetensors"),
    "safetensors file truncated": (lambda c: [broken_pipeline(c, lambda f: (f / WEIGHTS).write_bytes((f / WEIGHTS).read_bytes()[:500]))], "Unable to load weights"),
    "safetensors with wrong shapes": (lambda c: [broken_pipeline(c, rewrite_weights(lambda t: t.update({"blocks.0.conv.bias": torch.zeros(3, 3)})))], "expected shape"),
    "safetensors missing a weight": (lambda c: [broken_pipeline(c, rewrite_weights(lambda t: t.pop("blocks.0.conv.bias")))], "(missing keys: blocks.0.conv.bias"),
    "a schedule that makes blank images": (lambda c: [broken_pipeline(c, rewrite_config("scheduler", clip_sample_range=0.0)), "--scheduler", "ddpm"],
                                           "sampling made only blank images (every pixel 0.5) in batch 1"),
    "--num_images 0": (lambda c: [c.pipeline, "--num_images", 0], "--num_images 0 must be a positive integer"),
    "--batch_size -1": (lambda c: [c.pipeline, "--batch_size", -1], "--batch_size -1 must be a positive integer"),
    "--num_inference_steps 0": (lambda c: [c.pipeline, "--num_inference_steps", 0], "--num_inference_steps 0 must be a positive integer"),
    "--seed -1": (lambda c: [c.pipeline, "--seed", -1], "--seed -1 must be between 0 and 4294967295"),
    "--noise -1": (lambda c: [c.pipeline, "--noise", -1], "--noise -1 must not be negative"),
    "--noise nan": (lambda c: [c.pipeline, "--noise", "nan"], "--noise nan must be a finite number"),
    "--device unknown": (lambda c: [c.pipeline, "--device", "gpu7"], "--device 'gpu7' is not a device"),
    "--guidance_scale -1": (lambda c: [c.pipeline, "--guidance_scale", -1], "--guidance_scale -1 must not be negative"),
    "--guidance_scale, unconditional pipeline": (lambda c: [c.pipeline, "--guidance_scale", 3], "--guidance_scale applies to class-conditional pipelines (trained with --class_conditional) and autoguided ones only"),
    "--class_labels, unconditional pipeline": (lambda c: [c.pipeline, "--class_labels", 7], "--class_labels applies to class-conditional pipelines only"),
    "--output_dir under a file": (lambda c: [c.pipeline, "--output_dir", a_file(c) / "out"], "cannot write to --output_dir"),
    "--output_dir holding samples": (lambda c: [c.pipeline, "--output_dir", samples_folder(c)], "already holds samples.npz"),
    "--output_dir of a run": (lambda c: [c.pipeline, "--output_dir", c.run], "already holds model_index.json"),
    "--output_dir holding images but no samples.npz": (lambda c: [c.pipeline, "--output_dir", images_without_npz(c)], "already holds grid.png"),
    "a pipeline as a component": (lambda c: [broken_pipeline(c, nested_pipeline)], "names a DDPMPipeline as its 'inner' component, which is neither a model nor a scheduler"),
    "PIPELINE name too long": (lambda c: [c.root / LONG_NAME], "PIPELINE: the file name xxxxxxxxxxxxxxxxxxxx... is 300 bytes long"),
    "--output_dir name too long": (lambda c: [c.pipeline, "--output_dir", c.root / LONG_NAME / "samples"], "--output_dir: the file name"),
    "--batch_size that cannot fit in memory": (lambda c: [c.pipeline, "--num_images", TOO_MUCH, "--batch_size", TOO_MUCH], f"--batch_size {TOO_MUCH} needs up to"),
    "--num_images that cannot fit on disk": (lambda c: [c.pipeline, "--num_images", 10**12], "--num_images 1000000000000 would write up to"),
}


@pytest.mark.parametrize("case", SAMPLE_CASES)
def test_sample_refuses_bad_input_in_one_line(case, ctx, capsys):
    make_argv, message = SAMPLE_CASES[case]
    pipeline, *flags = make_argv(ctx)
    argv = [pipeline, "--num_images", 1, "--num_inference_steps", 2, *flags]
    if "--output_dir" not in argv:
        argv += ["--output_dir", fresh(ctx, "samples")]
    before = snapshot(*existing_folders(ctx, argv))
    status, lines = run_and_read_error(sample.main, argv, capsys)
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert all(path.read_bytes() == data for path, data in before.items())


def test_sampling_refuses_non_finite_images_and_writes_nothing(ctx, capsys, monkeypatch):
    """Weights that pass the checks can still overflow at run time (here: a NaN put in after loading)."""
    from diffusion_lab import sampling

    def open_overflowing_pipeline(*args, **kwargs):
        pipeline = sampling.open_pipeline(*args, **kwargs)
        pipeline.unet.conv_out.bias.data[0] = float("nan")
        return pipeline

    monkeypatch.setattr(sample, "open_pipeline", open_overflowing_pipeline)
    output_dir = fresh(ctx, "samples")
    status, lines = run_and_read_error(sample.main, [ctx.pipeline, "--num_images", 2, "--num_inference_steps", 2, "--output_dir", output_dir], capsys)
    assert status == 2 and len(lines) == 1 and "error: sampling made NaN or infinite values in batch 1" in lines[0], lines
    assert not output_dir.exists()


def test_a_typo_under_an_existing_folder_is_no_hub_id(ctx, capsys):
    Path("runs").mkdir()  # in the test's own empty working folder
    try:
        status, lines = run_and_read_error(sample.main, ["runs/ddpm-mnsit", "--output_dir", fresh(ctx, "samples")], capsys)
    finally:
        Path("runs").rmdir()
    assert status == 2 and lines == ["error: no such folder: runs/ddpm-mnsit: check the path (a Hub id is owner/name)."]


@pytest.fixture(scope="module")
def ema_run(ctx):
    """Like ctx.run (checkpoint-2 and its pipeline), with an EMA of the weights."""
    run = ctx.root / "ema-run"
    train_ddpm.main(["--output_dir", str(run), *SMALL_RUN, "--use_ema", "--max_train_steps", "2", "--checkpointing_steps", "2"])
    return run


@pytest.fixture(scope="module")
def cold_run(ctx):
    """A two-step cold-diffusion run, checkpoint-2 and its pipeline."""
    run = ctx.root / "cold-run"
    train_cold.main(["--output_dir", str(run), *SMALL_RUN, "--max_train_steps", "2", "--checkpointing_steps", "2", "--start_components", "2"])
    return run


def stopped_copy(c, run):
    """`run` as a run stopped before it wrote its pipeline: its checkpoints and records only."""
    folder = fresh(c, "stopped")
    pipeline_parts = ("model_index.json", "*.py", "unet", "scheduler", "degradation", "start_distribution", "README.md")
    shutil.copytree(run, folder, ignore=shutil.ignore_patterns(*pipeline_parts))
    return folder


@pytest.mark.parametrize("run, ema", [("ctx", False), ("ema_run", True), ("cold_run", False)], ids=["DDPM", "DDPM with EMA", "cold diffusion"])
def test_a_run_stopped_before_its_pipeline_samples_from_its_latest_checkpoint(run, ema, ctx, request, capsys):
    run = ctx.run if run == "ctx" else request.getfixturevalue(run)
    flags = ["--num_images", "3", "--num_inference_steps", "2"]
    stopped = stopped_copy(ctx, run)
    from_pipeline, from_checkpoint = stopped.with_name(f"{stopped.name}-samples-of-the-pipeline"), stopped.with_name(f"{stopped.name}-samples")
    sample.main([str(run), *flags, "--output_dir", str(from_pipeline)])
    capsys.readouterr()
    sample.main([str(stopped), *flags, "--output_dir", str(from_checkpoint)])
    weights = "EMA weights" if ema else "weights (the run kept no EMA)"
    assert f"{stopped} holds no pipeline: sampling from checkpoint-2, with its {weights}." in capsys.readouterr().out
    # The same images: the checkpoint holds the weights the run's pipeline was saved with.
    assert np.array_equal(np.load(from_checkpoint / "samples.npz")["images"], np.load(from_pipeline / "samples.npz")["images"])


def test_evaluate_takes_a_stopped_run_and_a_checkpoint_folder(ctx, capsys):
    from diffusion_lab.commands.evaluate import main

    stopped = stopped_copy(ctx, ctx.run)
    settings = stopped / "checkpoint-2" / "run_config.json"  # as written before --sampler existed: its default applies
    settings.write_text(json.dumps({name: value for name, value in json.loads(settings.read_text()).items() if name != "sampler"}))
    for source in (stopped, stopped / "checkpoint-2"):
        result = main([str(source), "--num_samples", "2", "--num_inference_steps", "2", "--dinov2_model", "none",
                       "--output", str(fresh(ctx, "evaluation").with_suffix(".json"))])
        assert result["num_samples"] == 2 and "digit_fd" in result
    assert f"sampling from {stopped / 'checkpoint-2'}, with its weights" in capsys.readouterr().out


def test_a_run_stopped_before_its_first_checkpoint_says_so(ctx, capsys):
    stopped = stopped_copy(ctx, ctx.run)
    shutil.rmtree(stopped / "checkpoint-2")
    status, lines = run_and_read_error(sample.main, [stopped, "--output_dir", fresh(ctx, "samples")], capsys)
    assert status == 2 and lines == [f"error: {stopped} holds a run that stopped before its first checkpoint, so there is no "
                                     "model to use yet: rerun the training with --overwrite_output_dir (and a smaller "
                                     "--checkpointing_steps to keep something sooner)."]


def command_process(*argv, **env):
    """`diffusion-lab ARGV` in a fresh process, its stdout and stderr piped."""
    return subprocess.Popen([sys.executable, "-m", "diffusion_lab", *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **env})


def test_sigterm_during_sample_keeps_the_images_made_and_says_so(ctx):
    output_dir = fresh(ctx, "samples")
    process = command_process("sample", ctx.pipeline, "--num_images", 100, "--batch_size", 1, "--scheduler", "ddpm",
                              "--num_inference_steps", 200, "--output_dir", output_dir)
    first_image, deadline = output_dir / "partial" / "images" / "00000.png", time.monotonic() + 120
    while not first_image.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    lines = shown_lines(err)
    assert process.returncode == 143 and len(lines) == 1, err[-2000:]
    kept = re.fullmatch(rf"stopped: SIGTERM received: the (\d+) of 100 images made so far are in {re.escape(str(output_dir / 'partial'))}/ "
                        r"\(images/\*\.png, samples\.npy\); rerun with --overwrite_output_dir for all of them\.", lines[0])
    assert kept and len(os.listdir(output_dir / "partial" / "images")) == int(kept.group(1)) >= 1, lines


def test_sigterm_during_evaluate_says_nothing_was_written(ctx):
    output = fresh(ctx, "evaluation").with_suffix(".json")
    process = command_process("evaluate", stopped_copy(ctx, ctx.run), "--num_samples", 1000, "--scheduler", "ddpm",
                              "--dinov2_model", "none", "--output", output)
    while "holds no pipeline" not in process.stdout.readline() and process.poll() is None:  # sampling starts next
        pass
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and shown_lines(err) == [
        f"stopped: SIGTERM received: evaluation stopped before writing {output} (nothing is written until it ends); rerun the command."], err[-2000:]
    assert not output.exists()


def test_an_offline_hub_fetch_fails_in_one_line_without_diffusers_warnings():
    """diffusers' own loader (--trust_remote_code) warns that it will try the local cache; our loader's message is
    the SAMPLE_CASES 'Hub id unreachable (offline)' case."""
    process = command_process("sample", "someone/no-such-pipeline", "--trust_remote_code", HF_HUB_OFFLINE="1")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2 and err.splitlines() == [
        "error: could not download pipeline 'someone/no-such-pipeline' from the Hub (LocalEntryNotFoundError): check the id "
        "and the network, or pass a local folder."], err


def npz_of(c, array):
    path = fresh(c, "images").with_suffix(".npz")
    np.savez(path, images=array)
    return path


def lying_npz(c):
    """An .npz whose array header claims 784 GB: refused before anything is allocated."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (10**9, 28, 28)})
    path = fresh(c, "lying").with_suffix(".npz")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images.npy", header.getvalue() + bytes(100))
    return path


def existing_file(c, name):
    path = fresh(c, "earlier") / name
    path.parent.mkdir(parents=True)
    path.write_text("{}\n")
    return path


def random_images(count=8):
    return np.random.default_rng(0).integers(0, 256, (count, 28, 28, 1), dtype=np.uint8)


EVALUATE_CASES = {
    "input that does not exist": (lambda c: [c.root / "nothing"], "no such folder: "),
    "a pipeline with a non-finite weight": (lambda c: [broken_pipeline(c, rewrite_weights(set_first("blocks.0.conv.weight", float("nan"))))], "holds NaN or infinite values"),
    ".npz that does not exist": (lambda c: [c.root / "nothing.npz"], "No such file or directory"),
    ".npz of the wrong shape": (lambda c: [npz_of(c, np.zeros((4, 5), np.uint8))], "has shape (4, 5): expected (N, H, W)"),
    "folder without PNGs": (lambda c: [empty_folder(c)], "No .png files in"),
    "corrupt PNG": (lambda c: [image_folder(c, lambda p: p.write_bytes(b"not an image"))], "cannot identify image file"),
    "damaged pipeline": (lambda c: [broken_pipeline(c, lambda f: (f / WEIGHTS).unlink())], "no file named diffusion_pytorch_model.safetensors"),
    "--num_samples 1": (lambda c: [c.pipeline, "--num_samples", 1], "--num_samples 1 must be at least 2"),
    "--batch_size 0": (lambda c: [c.pipeline, "--batch_size", 0], "--batch_size 0 must be a positive integer"),
    "--num_inference_steps 0": (lambda c: [c.pipeline, "--num_inference_steps", 0], "--num_inference_steps 0 must be a positive integer"),
    "--device unknown": (lambda c: [c.pipeline, "--device", "gpu7"], "--device 'gpu7' is not a device"),
    "--reference that does not exist": (lambda c: [npz_of(c, random_images()), "--reference", c.root / "nothing"], "not found"),
    "wrong --image_column": (lambda c: [npz_of(c, random_images()), "--image_column", "picture"], "Column 'picture' is not in the dataset"),
    "--output that exists": (lambda c: [npz_of(c, random_images()), "--output", existing_file(c, "old.json")], "old.json already exists: pass --overwrite"),
    ".npz whose header claims more than it holds": (lambda c: [lying_npz(c)], "claims shape (1000000000, 28, 28) (784,000,000,000 bytes) but holds 100 bytes"),
    "--output in a folder that does not exist": (lambda c: [npz_of(c, random_images()), "--output", c.root / "no" / "such" / "e.json"], "/no/such/e.json does not exist: create it or pass another --output"),
    "unknown --reference_split": (lambda c: [npz_of(c, random_images()), "--reference_split", "holdout"], "Unknown split \"holdout\""),
    "--output name too long": (lambda c: [npz_of(c, random_images()), "--output", c.root / f"{LONG_NAME}.json"], "--output: the file name"),
}


@pytest.mark.parametrize("case", EVALUATE_CASES)
def test_evaluate_refuses_bad_input_in_one_line(case, ctx, capsys):
    from diffusion_lab.commands.evaluate import main

    make_argv, message = EVALUATE_CASES[case]
    source, *flags = make_argv(ctx)
    argv = [source, "--num_samples", 2, "--num_inference_steps", 2, "--output", fresh(ctx, "evaluation").with_suffix(".json"), *flags]
    before = snapshot(*existing_folders(ctx, argv))
    status, lines = run_and_read_error(main, argv, capsys)
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert all(path.read_bytes() == data for path, data in before.items())
