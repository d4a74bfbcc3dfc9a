"""The autoguidance guide kept by the trainer: its snapshot steps, which EMA guides each step, checkpoints and resume,
and the pipelines it saves (issue 24)."""

import pytest
import torch
from diffusers import DDPMPipeline
from helpers import TINY_RUN
from safetensors.torch import load_file

from diffusion_lab.commands import train_ddpm
from diffusion_lab.pipelines import AutoguidedDDPMPipeline
from diffusion_lab.pipelines.export import load_pipeline
from diffusion_lab.training.arguments import ArgumentError
from diffusion_lab.training.autoguidance import SNAPSHOTS_FILE, GuideSnapshots, guide_model, snapshot_steps
from diffusion_lab.training.run_pipeline import load_run_pipeline

# TINY_RUN with the EMA: the guide is the EMA of an earlier step.
GUIDED_RUN = [*TINY_RUN, "--use_ema", "--autoguidance_scale", "2"]


def train(folder, *extra):
    args = train_ddpm.parse_args(["--output_dir", str(folder), *GUIDED_RUN, *map(str, extra)])
    return train_ddpm.run_training(args, train_ddpm.DDPMObjective.from_args(args), argv=["x.py"])


def unet_weights(folder, component):
    return load_file(folder / component / "diffusion_pytorch_model.safetensors")


def test_snapshots_are_taken_at_the_ceilings_of_powers_of_1_25():
    # 1.25^k = 1, 1.25, 1.56, 1.95, 2.44, 3.05, 3.81, 4.77, 5.96, 7.45, 9.31, 11.6, 14.6, 18.2, 22.7, 28.4, 35.5, 44.4
    assert snapshot_steps(45) == [1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 19, 23, 29, 36, 45]


@pytest.mark.parametrize("step, guide_step", [(2, None), (3, 1), (30, 10), (44, 12), (45, 15), (4764, 1578), (15000, 4815), (22500, 6019)])
def test_the_guide_is_the_latest_snapshot_at_or_before_a_third_of_the_steps(step, guide_step):
    assert GuideSnapshots(1 / 3).guide_step(step) == guide_step


def test_the_guide_is_always_between_0_8_and_1_times_the_fraction_from_step_100_on():
    guides = GuideSnapshots(0.3)
    ages = [guides.guide_step(step) / step for step in range(100, 30000, 7)]
    assert 0.3 / 1.25 - 0.01 < min(ages) and max(ages) <= 0.3


def test_snapshots_hold_the_weights_of_their_step_and_only_those_still_needed_are_kept():
    guides = GuideSnapshots(1 / 3)
    for step in range(1, 101):
        guides.take(step, lambda: [("w", torch.tensor([float(step)]))])
        if step == 14:
            assert guides.guide_for(14)["w"].item() == 4  # 14 / 3 = 4.67: the snapshot of step 4
    # At step 100 the guide is step 29's (100 / 3 = 33.3); earlier snapshots can never guide again.
    assert sorted(guides.snapshots) == [29, 36, 45, 56, 70, 87]
    assert guides.guide_for(100)["w"].item() == 29
    assert guides.guide_for(2) is None


def test_snapshots_are_copies_and_survive_a_save_and_load(tmp_path):
    weight = torch.zeros(3)
    guides = GuideSnapshots(1 / 3)
    for step in range(1, 13):
        weight += 1
        guides.take(step, lambda: [("a.weight", weight), ("b", weight * 2)])
    assert guides.guide_for(12)["a.weight"].tolist() == [4.0] * 3  # taken at step 4, not the tensor as it is now
    guides.save(tmp_path)
    loaded = GuideSnapshots(1 / 3)
    loaded.load(tmp_path)
    assert loaded.snapshots.keys() == guides.snapshots.keys()
    assert all(torch.equal(loaded.snapshots[step][name], guides.snapshots[step][name]) for step in guides.snapshots for name in ("a.weight", "b"))
    with pytest.raises(FileNotFoundError, match=f"holds no {SNAPSHOTS_FILE}.*resume from a checkpoint"):
        loaded.load(tmp_path / "elsewhere")


def test_a_guide_model_is_a_copy_with_the_snapshot_weights_and_refuses_another_models():
    model = torch.nn.Linear(2, 2)
    weights = {"weight": torch.ones(2, 2), "bias": torch.zeros(2)}
    guide = guide_model(model, weights)
    assert torch.equal(guide.weight, weights["weight"]) and not torch.equal(model.weight, weights["weight"])
    assert not guide.weight.requires_grad
    with pytest.raises(ValueError, match="lacks 1 of the model's weights .*bias.*another model's"):
        guide_model(model, {"weight": torch.ones(2, 2)})


def test_the_saved_pipeline_is_guided_by_the_ema_of_a_third_of_the_steps(tmp_path):
    train(tmp_path / "twelve", "--max_train_steps", "12")
    train(tmp_path / "four", "--max_train_steps", "4")  # the same run, stopped where the guide of step 12 was taken
    pipeline = load_pipeline(str(tmp_path / "twelve"))
    assert type(pipeline) is AutoguidedDDPMPipeline and pipeline.config.guidance_scale == 2
    guide, ema_at_four = unet_weights(tmp_path / "twelve", "guide_unet"), unet_weights(tmp_path / "four", "unet")
    assert guide.keys() == ema_at_four.keys() and all(torch.equal(guide[k], ema_at_four[k]) for k in guide)
    main = unet_weights(tmp_path / "twelve", "unet")
    assert not all(torch.equal(main[k], guide[k]) for k in main)
    # Step 4's own pipeline is guided by step 1's EMA, not by itself.
    assert not all(torch.equal(ema_at_four[k], unet_weights(tmp_path / "four", "guide_unet")[k]) for k in ema_at_four)


def test_a_resumed_run_keeps_the_guide_of_an_uninterrupted_one(tmp_path):
    common = ["--checkpointing_steps", "5"]
    train(tmp_path / "whole", "--max_train_steps", "20", *common)
    train(tmp_path / "resumed", "--max_train_steps", "5", *common)
    assert (tmp_path / "resumed" / "checkpoint-5" / SNAPSHOTS_FILE).is_file()
    train(tmp_path / "resumed", "--max_train_steps", "20", *common, "--resume_from_checkpoint", "latest")
    for component in ("unet", "guide_unet"):  # the guide of step 20 is step 6's, taken after the resume
        whole, resumed = unet_weights(tmp_path / "whole", component), unet_weights(tmp_path / "resumed", component)
        assert all(torch.equal(whole[k], resumed[k]) for k in whole), component
    # A run that stopped before writing its pipeline samples from its checkpoint with the same guide.
    from_checkpoint = load_run_pipeline(str(tmp_path / "whole" / "checkpoint-20"))
    saved = load_pipeline(str(tmp_path / "whole"))
    assert type(from_checkpoint) is AutoguidedDDPMPipeline
    for component in ("unet", "guide_unet"):  # the EMA weights, without the EMA's settings in their config
        model, expected = getattr(from_checkpoint, component), getattr(saved, component)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.state_dict().values())), component
        assert not {"decay", "power", "optimization_step"} & set(model.config), component


def test_scale_one_saves_a_stock_ddpm_pipeline_and_grids_are_guided_only_when_asked(tmp_path):
    trainer = train(tmp_path / "run", "--max_train_steps", "6")
    guided, unguided = (trainer.generate(2, "test", seed=1, guided=flag) for flag in (True, False))
    assert not torch.allclose(guided, unguided, atol=1e-3)
    assert torch.equal(unguided, trainer.generate(2, "test", seed=1, guided=False))
    train(tmp_path / "plain", "--max_train_steps", "6", "--autoguidance_scale", "1")
    assert type(load_pipeline(str(tmp_path / "plain"))) is DDPMPipeline
    assert not (tmp_path / "plain" / "guide_unet").exists()


def test_the_cpu_recipe_guides_unconditional_runs_only():
    assert train_ddpm.parse_args([]).autoguidance_scale == 1.5
    assert train_ddpm.parse_args(["--class_conditional"]).autoguidance_scale == 1
    assert train_ddpm.parse_args(["--noise_schedule", "entropy_scaled"]).autoguidance_scale == 1
    assert train_ddpm.DDPMObjective.from_args(train_ddpm.parse_args(["--class_conditional"])).autoguidance is None


@pytest.mark.parametrize("flags, message", [
    (["--class_conditional"], "not --class_conditional: drop one of the two .*--guidance_scale when sampling"),
    (["--noise_schedule", "entropy_scaled"], "not --noise_schedule entropy_scaled: drop one of the two"),
])
def test_autoguidance_with_a_conditional_or_entropy_scaled_run_is_refused(flags, message):
    args = train_ddpm.parse_args(["--autoguidance_scale", "2", *flags])
    with pytest.raises(ArgumentError, match=message):
        train_ddpm.DDPMObjective.from_args(args)


def test_a_guide_fraction_outside_zero_to_one_is_refused(capsys):
    with pytest.raises(SystemExit):
        train_ddpm.parse_args(["--autoguidance_guide_fraction", "1"])
    assert "--autoguidance_guide_fraction" in capsys.readouterr().err
