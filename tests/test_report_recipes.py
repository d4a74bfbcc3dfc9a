"""The reports' recipes (experiments/recipes/): their flags parse and, for FGVC-Aircraft, run on a generated folder of
RGB images through the same code path (train, save, load, sample, in-training evaluation); per-epoch checkpoints."""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_RUN
from PIL import Image

from diffusion_lab.commands import train_ddpm
from diffusion_lab.pipelines.export import load_pipeline
from diffusion_lab.training.arguments import validate_training_args

RECIPES = Path(__file__).resolve().parents[1] / "experiments" / "recipes"


def recipe_flags(name: str) -> list[str]:
    """The REPORT_FLAGS=(...) list of a recipe script."""
    match = re.search(r"^REPORT_FLAGS=\((.*?)\)$", (RECIPES / name).read_text(), re.M)
    return shlex.split(match.group(1))


def flag(flags: list[str], name: str) -> str:
    return flags[flags.index(name) + 1]


def test_recipes_state_the_reports_hyper_parameters():
    fgvc = recipe_flags("fgvc_aircraft.sh")
    assert {name: flag(fgvc, name) for name in ("--model", "--resolution", "--dropout", "--loss", "--optimizer", "--learning_rate",
                                                 "--train_batch_size", "--beta_start", "--beta_end", "--ddpm_num_steps", "--num_epochs")} == {
        "--model": "unet_fgvc_aircraft", "--resolution": "64", "--dropout": "0.01", "--loss": "smooth_l1", "--optimizer": "adam",
        "--learning_rate": "2e-4", "--train_batch_size": "32", "--beta_start": "1e-4", "--beta_end": "0.02",
        "--ddpm_num_steps": "500", "--num_epochs": "20"}
    assert "--center_crop" in fgvc
    mnist = recipe_flags("unet_report_mnist.sh")
    assert (flag(mnist, "--model"), flag(mnist, "--dropout"), flag(mnist, "--ddpm_num_steps"), flag(mnist, "--num_epochs"),
            flag(mnist, "--train_batch_size"), flag(mnist, "--loss")) == ("unet", "0.01", "300", "15", "32", "smooth_l1")
    table_row = json.loads((RECIPES.parent / "unet_report_mnist.json").read_text())["flags"]
    assert all(flag(table_row, name) == flag(mnist, name) for name in ("--model", "--dropout", "--loss", "--learning_rate", "--ddpm_num_steps"))
    cifar = recipe_flags("cifar10_ho.sh")
    assert (flag(cifar, "--model"), flag(cifar, "--optimizer"), flag(cifar, "--lr_scheduler"), flag(cifar, "--max_grad_norm")) == (
        "unet_cifar10", "adamw", "cosine", "1.0")
    assert int(flag(cifar, "--lr_warmup_steps")) > 0 and "--keep_epoch_checkpoints" in cifar
    for flags in (fgvc, mnist, cifar):  # every flag is one the trainer knows, with a valid value
        validate_training_args(train_ddpm.parse_args(flags))


@pytest.mark.parametrize("name", ["fgvc_aircraft.sh", "unet_report_mnist.sh", "cifar10_ho.sh"])
def test_a_recipe_trains_the_same_on_a_cpu_and_a_gpu(monkeypatch, name):
    """A report's training does not change with the device: its plain loss and unguided samples do not become the CPU
    recipe's min-SNR-5 weighting, logit-normal timesteps, clusters and autoguidance (they did before the scripts said
    --snr_gamma 0 --autoguidance_scale 1, and --timestep_sampling uniform --cluster_conditioning 0)."""
    def training(cuda):
        monkeypatch.setattr("diffusion_lab.commands.train_ddpm.training_device_is_cuda", lambda: cuda)
        args = train_ddpm.parse_args(recipe_flags(name))
        return {flag: getattr(args, flag) for flag in ("model", "train_batch_size", "learning_rate", "lr_scheduler", "num_epochs", "snr_gamma",
                                                       "autoguidance_scale", "timestep_sampling", "cluster_conditioning")}

    on_cpu = training(cuda=False)
    assert on_cpu == training(cuda=True)
    assert (on_cpu["snr_gamma"], on_cpu["autoguidance_scale"], on_cpu["timestep_sampling"], on_cpu["cluster_conditioning"]) == (0, 1, "uniform", 0)


@pytest.fixture(scope="module")
def aircraft_folder(tmp_path_factory):
    """10 RGB photos-to-be of a size that needs the centre crop (96 x 80), in the imagefolder layout."""
    folder = tmp_path_factory.mktemp("aircraft") / "images"
    folder.mkdir()
    generator = np.random.default_rng(0)
    for index in range(10):
        pixels = generator.integers(0, 256, (80, 96, 3), dtype=np.uint8)
        pixels[:, :8] = [255, 0, 0]  # red strips at the left and right edges: the centre crop removes them
        pixels[:, -8:] = [255, 0, 0]
        Image.fromarray(pixels).save(folder / f"aircraft_{index:02d}.jpg", quality=95)
    return folder


def test_fgvc_aircraft_recipe_runs_on_a_generated_rgb_folder(aircraft_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "no-hub"))  # no Inception weights anywhere
    flags = recipe_flags("fgvc_aircraft.sh")
    for name, value in (("--train_batch_size", "3"), ("--num_epochs", "1"), ("--eval_num_samples", "2")):
        flags[flags.index(name) + 1] = value
    output_dir = tmp_path / "ddpm-fgvc-aircraft"
    argv = ["--train_data_dir", str(aircraft_folder), *flags, "--output_dir", str(output_dir), "--max_train_steps", "1",
            "--validation_fraction", "0.4",
            "--eval_batch_size", "2", "--num_inference_steps", "1", "--logger", "none"]
    args = train_ddpm.parse_args(argv)
    train_ddpm.run_training(args, train_ddpm.DDPMObjective.from_args(args), argv=["train_ddpm.py", *argv])
    printed = capsys.readouterr().out
    assert "FID and Inception Score on Inception-v3 skipped" in printed  # the in-training evaluation says why
    assert "on 6 images (4 held out)" in printed

    pipeline = load_pipeline(str(output_dir))
    unet = pipeline.unet
    assert (unet.config.sample_size, unet.config.in_channels, unet.config.dropout) == (64, 3, 0.01)
    assert pipeline.scheduler.config.num_train_timesteps == 500
    images = pipeline(batch_size=1, num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (1, 64, 64, 3)
    record = json.loads((output_dir / "training_args.json").read_text())["args"]
    assert record["center_crop"] and record["resolution"] == 64 and record["loss"] == "smooth_l1"


def test_centre_crop_keeps_the_middle_of_an_rgb_image(aircraft_folder):
    from diffusion_lab.data import load_image_caches

    train, _ = load_image_caches(train_data_dir=str(aircraft_folder), resolution=64, center_crop=True)
    assert train.images.shape[1:] == (3, 64, 64)
    # 80 x 96 -> 64 x 77 (shorter side to 64), crop 6 columns off the left: the 8-pixel red strips (6.4 pixels after
    # resizing) are all but gone; without the crop they stay.
    edge = train.images[:, :, :, 1].astype(float)
    assert (edge[:, 0] - edge[:, 1]).mean() < 120
    squashed, _ = load_image_caches(train_data_dir=str(aircraft_folder), resolution=64, center_crop=False)
    edge = squashed.images[:, :, :, 1].astype(float)
    assert (edge[:, 0] - edge[:, 1]).mean() > 200


def test_keep_epoch_checkpoints_keeps_one_checkpoint_per_epoch(tmp_path):
    def run(folder, *extra):
        argv = ["--output_dir", str(folder), *TINY_RUN, "--max_train_steps", "20", "--checkpointing_steps", "3",
                "--checkpoints_total_limit", "1", *extra]
        args = train_ddpm.parse_args(argv)
        train_ddpm.run_training(args, train_ddpm.DDPMObjective.from_args(args), argv=["train_ddpm.py"])
        return sorted(int(path.name.split("-")[1]) for path in folder.glob("checkpoint-*"))

    # 256 images at batch 32: 8 steps per epoch, epochs end at steps 8, 16 and 20 (the last, partial).
    assert run(tmp_path / "kept", "--keep_epoch_checkpoints") == [8, 16, 20]  # 18 pruned: the limit is 1 besides them
    assert run(tmp_path / "plain") == [18]
