"""train_cold.py: a short real run on MNIST lowers the loss and writes a cold pipeline that samples."""

import json

import pytest
import torch
from helpers import TINY_RUN

from diffusion_lab.commands import train_cold
from diffusion_lab.degradations import (
    DegradationOptions,
    GaussianBlur,
    RowColumnAveraging,
)
from diffusion_lab.pipelines import ColdDiffusionPipeline
from diffusion_lab.training.arguments import ArgumentError
from diffusion_lab.training.cold_objective import ColdObjective


def test_short_training_run_lowers_the_loss_and_saves_a_sampling_pipeline(tmp_path):
    output_dir = tmp_path / "cold"
    train_cold.main([*TINY_RUN, "--output_dir", str(output_dir), "--degradation", "columns", "--group_size", "4",
                     "--num_epochs", "3", "--start_components", "3"])
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in records if "loss" in record]
    assert losses[-1] < 0.8 * losses[0], losses
    validation = [record["val_loss"] for record in records if "val_loss" in record]
    assert validation[-1] < validation[0], validation

    pipeline = ColdDiffusionPipeline.from_pretrained(output_dir)
    assert pipeline.degradation.config.orientation == "columns" and pipeline.degradation.num_levels == 7
    assert pipeline.unet.config.num_train_timesteps == 7  # the CNN sees t / T with T = 7 levels
    assert pipeline.start_distribution.config.num_components == 3
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert images.degraded.std(dim=-2).max() < 1e-6  # started from constant columns
    bands = images.degraded.reshape(2, 1, 28, 7, 4)  # 7 bands of 4 adjacent columns, one value each
    assert (bands - bands[..., :1]).abs().max() < 1e-6
    assert (output_dir / "samples").is_dir()


def test_degradation_flags_reach_the_degradation_or_are_refused():
    objective = ColdObjective.from_args(train_cold.parse_args(["--degradation", "blur", "--kernel_std", "0.5", "--num_levels", "6"]))
    assert isinstance(objective.degradation, GaussianBlur) and objective.num_train_timesteps == 6
    assert objective.degradation.config.kernel_std == 0.5 and objective.loss_fn is torch.nn.functional.l1_loss
    objective = ColdObjective.from_args(train_cold.parse_args(["--order", "inside_out", "--order_seed", "3", "--loss", "mse"]))
    assert isinstance(objective.degradation, RowColumnAveraging) and objective.degradation.config.order == "inside_out"
    assert objective.loss_fn is torch.nn.functional.mse_loss
    assert objective.degradation.config.group_mode == "band"  # the report's grouping by default
    objective = ColdObjective.from_args(train_cold.parse_args(["--group_size", "4", "--group_mode", "separate"]))
    assert objective.degradation.config.group_mode == "separate" and objective.num_train_timesteps == 7
    for argv, message in (
        (["--kernel_std", "0.5"], "--kernel_std does not apply to --degradation rows"),
        (["--group_size", "29"], "group_size 29"),
        (["--degradation", "blur", "--group_mode", "band"], "--group_mode does not apply to --degradation blur"),
        (["--start_components", "5", "--start_samples", "4"], "--start_samples 4"),
    ):
        with pytest.raises(ArgumentError, match=message):
            ColdObjective.from_args(train_cold.parse_args(argv))
    with pytest.raises(SystemExit):  # a value out of its own range is refused where it is parsed
        train_cold.parse_args(["--noise", "-1"])


def test_every_degradation_option_has_its_flag():
    defaults = train_cold.parse_args([])
    assert DegradationOptions.from_args(defaults) == DegradationOptions()  # no flag given: every default
    for name in DegradationOptions.__dataclass_fields__:
        assert hasattr(defaults, DegradationOptions.flag(name).removeprefix("--")), name
    assert DegradationOptions.flag("seed") == "--order_seed"
    assert DegradationOptions.from_args(train_cold.parse_args(["--order_seed", "5"])) == DegradationOptions(seed=5)


def test_the_start_distribution_needs_training_images():
    objective = ColdObjective(RowColumnAveraging(), start_components=4)
    with pytest.raises(ArgumentError, match="only 0 training images"):
        objective.start_distribution()
