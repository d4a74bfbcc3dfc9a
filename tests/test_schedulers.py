"""Noise schedules: formulas, indexing, forward statistics, save/load, portability and fast-sampler swaps."""

import inspect
import json
import math

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UNet2DModel,
)
from helpers import run_with_diffusers_only

from diffusion_lab.schedulers import (
    NOISE_SCHEDULES,
    CosineCustomDDPMScheduler,
    EntropyScaledDDPMScheduler,
    GeometricDDPMScheduler,
    LinearDDPMScheduler,
    build_noise_scheduler,
    portable_scheduler,
)

T, B1, B2 = 1000, 1e-4, 0.02
PORTABLE_SCHEDULES = [name for name in NOISE_SCHEDULES if name != "entropy_scaled"]

# beta(t) at t = 1, T/2, T (indices 0, 499, 999), worked out by hand from each formula with B1 = 1e-4, B2 = 0.02.
HAND_BETAS = {
    # 1e-4 + (t / 1000) * 0.0199
    LinearDDPMScheduler: (1.199e-4, 1.0050e-2, 2e-2),
    # 1e-4 * 200 ** (t / 1000): 200 ** 0.001 = 1.0053124, 200 ** 0.5 = 14.142136
    GeometricDDPMScheduler: (1.0053124e-4, 1.4142136e-3, 2e-2),
    # 0.00995 * (1 - cos(pi t / 1000)) + 1e-4: 1 - cos(pi / 1000) = 4.934798e-6, cos(pi / 2) = 0, cos(pi) = -1
    CosineCustomDDPMScheduler: (1.0004910e-4, 1.0050e-2, 2e-2),
}


@pytest.mark.parametrize("scheduler_class", list(HAND_BETAS))
def test_betas_match_hand_computation_at_t_1_half_and_T(scheduler_class):
    scheduler = scheduler_class(num_train_timesteps=T, beta_start=B1, beta_end=B2)
    expected = torch.tensor(HAND_BETAS[scheduler_class], dtype=torch.float32)
    torch.testing.assert_close(scheduler.betas[[0, T // 2 - 1, T - 1]], expected, rtol=1e-6, atol=0)
    # Indexing convention: the last index is t = T, so the last beta is exactly beta_end.
    assert scheduler.betas[-1].item() == torch.tensor(B2, dtype=torch.float32).item()
    assert scheduler.alphas_cumprod[0].item() == pytest.approx(1 - HAND_BETAS[scheduler_class][0], rel=1e-7)


def test_linear_is_diffusers_linear_shifted_by_one_step():
    """Our t = i + 1 against diffusers' linspace over beta_start..beta_end: betas differ by under one step."""
    ours, theirs = LinearDDPMScheduler().betas, DDPMScheduler(beta_schedule="linear").betas
    assert ours[0] > theirs[0] and ours[-1] == theirs[-1]
    assert (ours - theirs).abs().max() <= (B2 - B1) / T + 1e-9


@pytest.mark.parametrize("name", NOISE_SCHEDULES)
def test_betas_rise_and_alpha_bar_falls_within_range(name):
    scheduler = build_noise_scheduler(name, T, B1, B2, "epsilon")
    betas, alpha_bar = scheduler.betas, scheduler.alphas_cumprod
    assert len(scheduler) == T and betas.shape == (T,)
    assert ((betas > 0) & (betas < 1)).all()
    assert (betas[1:] >= betas[:-1]).all()
    assert ((alpha_bar > 0) & (alpha_bar < 1)).all()
    assert (alpha_bar[1:] < alpha_bar[:-1]).all()


@pytest.mark.parametrize("name", ["linear", "geometric", "cosine_custom"])
def test_add_noise_statistics_match_alpha_bar(name):
    scheduler = build_noise_scheduler(name, T, B1, B2, "epsilon")
    generator = torch.Generator().manual_seed(0)
    x = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    draws = 20000
    for index in (0, T // 2 - 1, T - 1):
        noise = torch.randn((draws, 1, 4, 4), generator=generator)
        z = scheduler.add_noise(x.expand(draws, -1, -1, -1), noise, torch.full((draws,), index))
        alpha_bar = scheduler.alphas_cumprod[index].item()
        # Standard errors: sqrt((1 - abar) / draws) for the mean, about sqrt(2 / draws) relative for the variance.
        torch.testing.assert_close(z.mean(0), math.sqrt(alpha_bar) * x[0], atol=5 * math.sqrt((1 - alpha_bar) / draws), rtol=0)
        assert z.var(0).mean().item() == pytest.approx(1 - alpha_bar, rel=0.02)


def test_step_uses_the_chosen_reverse_variance():
    """fixed_large adds noise of variance beta_t (the seeds'), fixed_small the posterior variance.

    At index 1 (t = 2) they differ by a factor of about beta(1) / (beta(1) + beta(2)), close to 1/2.
    """
    index, zeros = 1, torch.zeros(1, 1, 64, 64)
    betas = LinearDDPMScheduler().betas.double()
    alpha_bar = torch.cumprod(1 - betas, 0)
    expected = {
        "fixed_large": betas[index].item(),
        "fixed_small": ((1 - alpha_bar[index - 1]) / (1 - alpha_bar[index]) * betas[index]).item(),
    }
    for variance_type, variance in expected.items():
        scheduler = LinearDDPMScheduler(variance_type=variance_type)
        # x_t = 0 and predicted noise 0 give mean 0, so the result is the added noise alone (4096 draws).
        prev = scheduler.step(zeros, index, zeros, generator=torch.Generator().manual_seed(0)).prev_sample
        assert prev.var().item() == pytest.approx(variance, rel=0.1)
    assert expected["fixed_small"] < 0.6 * expected["fixed_large"]


def public_config(scheduler) -> dict:
    """The config less bookkeeping keys such as `_use_default_values`, which save_pretrained drops."""
    return {key: value for key, value in scheduler.config.items() if not key.startswith("_")}


@pytest.mark.parametrize("scheduler_class", [*HAND_BETAS, EntropyScaledDDPMScheduler])
def test_config_holds_exactly_the_schedulers_own_arguments(scheduler_class):
    """DDPMScheduler's __init__ registers its arguments after ours: it must neither add any nor reset ours."""
    arguments = dict(
        num_train_timesteps=50, beta_start=1e-3, beta_end=0.05, variance_type="fixed_large", clip_sample=False,
        prediction_type="sample", thresholding=True, dynamic_thresholding_ratio=0.9, clip_sample_range=2.0,
        sample_max_value=2.0, timestep_spacing="trailing", steps_offset=1,
    )
    config = public_config(scheduler_class(**arguments))
    assert config.keys() == set(inspect.signature(scheduler_class.__init__).parameters) - {"self"}
    assert {name: config[name] for name in arguments} == arguments
    not_taken = {"rescale_betas_zero_snr"} | ({"trained_betas", "beta_schedule"} if scheduler_class in HAND_BETAS else set())
    assert not config.keys() & not_taken


@pytest.mark.parametrize("name", NOISE_SCHEDULES)
def test_save_load_round_trip_is_exact(name, tmp_path):
    scheduler = build_noise_scheduler(name, 50, B1, B2, "v_prediction", "fixed_large")
    scheduler.save_pretrained(tmp_path)
    loaded = type(scheduler).from_pretrained(tmp_path)
    assert type(loaded) is type(scheduler)
    assert public_config(loaded) == public_config(scheduler)
    assert torch.equal(loaded.betas, scheduler.betas)
    assert torch.equal(loaded.alphas_cumprod, scheduler.alphas_cumprod)


@pytest.mark.parametrize("name", PORTABLE_SCHEDULES)
def test_portable_scheduler_keeps_betas_and_options(name, tmp_path):
    scheduler = build_noise_scheduler(name, T, B1, B2, "sample", "fixed_large")
    portable = portable_scheduler(scheduler)
    assert type(portable) is DDPMScheduler
    assert torch.equal(portable.alphas_cumprod, scheduler.alphas_cumprod)
    assert (portable.config.prediction_type, portable.config.variance_type) == ("sample", "fixed_large")
    portable.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "scheduler_config.json").read_text())
    assert saved["_class_name"] == "DDPMScheduler" and len(saved["trained_betas"]) == T
    assert torch.equal(DDPMScheduler.from_pretrained(tmp_path).alphas_cumprod, scheduler.alphas_cumprod)


@pytest.mark.parametrize("fast_scheduler_class", [DDIMScheduler, DPMSolverMultistepScheduler])
@pytest.mark.parametrize("name", NOISE_SCHEDULES)
def test_fast_sampler_swap_reproduces_alpha_bar(name, fast_scheduler_class):
    scheduler = build_noise_scheduler(name, T, B1, B2, "epsilon")
    # What a saved pipeline holds: the portable form, or the DES scheduler itself (its config has trained_betas).
    saved = scheduler if name == "entropy_scaled" else portable_scheduler(scheduler)
    swapped = fast_scheduler_class.from_config(saved.config)
    assert torch.equal(swapped.alphas_cumprod, scheduler.alphas_cumprod)
    assert swapped.config.prediction_type == "epsilon"


def test_portable_pipeline_loads_and_samples_without_diffusion_lab(tmp_path):
    expected = {}
    for name in ("linear", "geometric", "cosine_custom"):
        unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8), norm_num_groups=4,
                           layers_per_block=1, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
        scheduler = build_noise_scheduler(name, 20, B1, 0.2, "epsilon")
        DDPMPipeline(unet=unet, scheduler=portable_scheduler(scheduler)).save_pretrained(tmp_path / name)
        expected[name] = scheduler.alphas_cumprod.tolist()
    (tmp_path / "expected.json").write_text(json.dumps(expected))
    script = f"""
import json, sys, torch
from diffusers import DiffusionPipeline, DDIMScheduler
expected = json.load(open({str(tmp_path / "expected.json")!r}))
for name, alpha_bar in expected.items():
    pipe = DiffusionPipeline.from_pretrained({str(tmp_path)!r} + "/" + name)
    assert type(pipe).__name__ == "DDPMPipeline", type(pipe)
    assert torch.equal(pipe.scheduler.alphas_cumprod, torch.tensor(alpha_bar)), name
    images = pipe(batch_size=2, num_inference_steps=5, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (2, 8, 8, 1) and (images >= 0).all() and (images <= 1).all()
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    assert torch.equal(pipe.scheduler.alphas_cumprod, torch.tensor(alpha_bar)), name
assert "diffusion_lab" not in sys.modules, "loading imported diffusion_lab"
print("ok")
"""
    assert run_with_diffusers_only(script, tmp_path).strip().endswith("ok")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(num_train_timesteps=1), "num_train_timesteps=1 is too small"),
        (dict(beta_start=0.0), r"beta_start=0.0 must lie in \(0, 1\)"),
        (dict(beta_start=-1e-4), r"beta_start=-0.0001 must lie in \(0, 1\)"),
        (dict(beta_end=1.0), r"beta_end=1.0 must lie in \(0, 1\)"),
        (dict(beta_start=0.02, beta_end=1e-4), "beta_end=0.0001 must be larger than beta_start=0.02"),
        (dict(beta_start=0.01, beta_end=0.01), "must be larger than beta_start"),
        (dict(prediction_type="noise"), "prediction_type='noise' is unknown"),
        (dict(variance_type="learned"), "variance_type='learned' is not supported"),
        (dict(noise_schedule="cosine_v3"), "noise_schedule='cosine_v3' is unknown: use one of linear, geometric"),
        (dict(noise_schedule="entropy_scaled", des_base_schedule="entropy_scaled"), "is not a base schedule"),
        (dict(noise_schedule="entropy_scaled", des_entropy_mode="pixel"), "des_entropy_mode='pixel' is unknown"),
    ],
)
def test_factory_refuses_invalid_values(options, message):
    arguments = dict(noise_schedule="geometric", num_train_timesteps=T, beta_start=B1, beta_end=B2, prediction_type="epsilon")
    with pytest.raises(ValueError, match=message):
        build_noise_scheduler(**{**arguments, **options})


@pytest.mark.parametrize("scheduler_class", list(HAND_BETAS))
def test_scheduler_classes_refuse_invalid_values(scheduler_class):
    with pytest.raises(ValueError, match=r"beta_end=1.5 must lie in \(0, 1\)"):
        scheduler_class(beta_end=1.5)
    with pytest.raises(ValueError, match="must be larger than beta_start"):
        scheduler_class(beta_start=0.02, beta_end=0.01)


def test_entropy_scaled_is_not_portable():
    with pytest.raises(ValueError, match="EntropyScaledDDPMPipeline"):
        portable_scheduler(build_noise_scheduler("entropy_scaled", T, B1, B2, "epsilon"))


def test_trained_betas_are_plain_floats_that_reload_exactly():
    betas = GeometricDDPMScheduler().betas
    portable = portable_scheduler(GeometricDDPMScheduler())
    assert all(type(beta) is float for beta in portable.config.trained_betas)
    assert torch.equal(torch.tensor(np.array(portable.config.trained_betas), dtype=torch.float32), betas)
    assert isinstance(build_noise_scheduler("entropy_scaled", T, B1, B2, "epsilon"), EntropyScaledDDPMScheduler)
