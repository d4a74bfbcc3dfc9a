"""Entropy-scaled diffusion (DES): entropy, noise scale, forward statistics, reverse step, pipeline."""

import math

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from diffusion_lab.pipelines import EntropyScaledDDPMPipeline
from diffusion_lab.schedulers import (
    EntropyScaledDDPMScheduler,
    build_noise_scheduler,
    histogram_entropy,
)

# Pixels in [-1, 1]: the 256 levels k / 127.5 - 1, once each, as a 16x16 image.
UNIFORM_256 = (torch.arange(256, dtype=torch.float32) / 127.5 - 1).reshape(1, 1, 16, 16)
# Half the pixels at -1, half at 1.
TWO_LEVEL = torch.tensor([-1.0, 1.0]).repeat_interleave(128).reshape(1, 1, 16, 16)
CONSTANT = torch.full((1, 1, 16, 16), 0.3)


def des_scheduler(entropy_mode="batch") -> EntropyScaledDDPMScheduler:
    return build_noise_scheduler("entropy_scaled", 1000, 1e-4, 0.02, "epsilon", des_entropy_mode=entropy_mode)


def test_entropy_of_uniform_two_level_and_constant_images():
    assert histogram_entropy(UNIFORM_256, per_image=False).item() == pytest.approx(8.0, abs=1e-5)
    assert histogram_entropy(TWO_LEVEL, per_image=False).item() == pytest.approx(1.0, abs=1e-6)
    constant = histogram_entropy(CONSTANT, per_image=False)
    assert constant.item() == 0.0 and not constant.isnan()


def test_per_image_entropy_keeps_images_apart_in_one_call():
    images = torch.cat([UNIFORM_256, TWO_LEVEL, CONSTANT])
    torch.testing.assert_close(histogram_entropy(images, per_image=True), torch.tensor([8.0, 1.0, 0.0]), atol=1e-5, rtol=0)


def test_batch_entropy_pools_all_pixels_over_the_batch_range():
    # Over [-1, 1]: bin 0 holds 1 + 128 pixels, bin 255 holds 1 + 128, the bin of 0.3 (166) holds 1 + 256,
    # and the other 253 bins one pixel each: 768 pixels.
    counts = torch.tensor([129.0, 129.0, 257.0] + [1.0] * 253)
    p = counts / 768
    expected = -(p * torch.log2(p)).sum()
    images = torch.cat([UNIFORM_256, TWO_LEVEL, CONSTANT])
    assert histogram_entropy(images, per_image=False).item() == pytest.approx(expected.item(), rel=1e-6)


def test_noise_scale_is_sigmoid_of_entropy_and_one_half_for_constant_data():
    scheduler = des_scheduler()
    assert scheduler.noise_scale_of(TWO_LEVEL).item() == pytest.approx(1 / (1 + math.exp(-1)), rel=1e-6)
    constant = scheduler.noise_scale_of(CONSTANT.expand(4, -1, -1, -1))
    assert constant.item() == 0.5
    per_image = des_scheduler("image").noise_scale_of(torch.cat([UNIFORM_256, CONSTANT]))
    assert per_image.shape == (2, 1, 1, 1)
    torch.testing.assert_close(per_image.flatten(), torch.sigmoid(torch.tensor([8.0, 0.0])))


@pytest.mark.parametrize("entropy_mode", ["batch", "image"])
def test_add_noise_statistics_match_alpha_bar_and_s(entropy_mode):
    scheduler = des_scheduler(entropy_mode)
    s = 1 / (1 + math.exp(-1))  # the two-level image has entropy 1 bit, per image and for any batch of copies
    draws, index = 20000, 300
    noise = torch.randn((draws, 1, 16, 16), generator=torch.Generator().manual_seed(0))
    z = scheduler.add_noise(TWO_LEVEL.expand(draws, -1, -1, -1), noise, torch.full((draws,), index))
    alpha_bar = scheduler.alphas_cumprod[index].item()
    torch.testing.assert_close(z.mean(0), math.sqrt(alpha_bar) * TWO_LEVEL[0], atol=5 * s * math.sqrt((1 - alpha_bar) / draws), rtol=0)
    assert z.var(0).mean().item() == pytest.approx(s**2 * (1 - alpha_bar), rel=0.02)
    assert scheduler.noise_scale == pytest.approx(s, rel=1e-6)


def test_per_image_mode_scales_each_image_by_its_own_s():
    scheduler = des_scheduler("image")
    clean = torch.cat([UNIFORM_256, TWO_LEVEL])
    noise, timesteps = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1)), torch.tensor([10, 700])
    alpha_bar = scheduler.alphas_cumprod[timesteps].reshape(-1, 1, 1, 1)
    s = torch.sigmoid(torch.tensor([8.0, 1.0])).reshape(-1, 1, 1, 1)
    expected = alpha_bar.sqrt() * clean + s * (1 - alpha_bar).sqrt() * noise
    torch.testing.assert_close(scheduler.add_noise(clean, noise, timesteps), expected)
    torch.testing.assert_close(scheduler.last_noise_scale, s.flatten())


def test_sampling_noise_scale_is_the_mean_over_training_images_and_is_saved(tmp_path):
    scheduler = des_scheduler()
    with pytest.raises(ValueError, match="noise_scale is unknown"):
        scheduler.init_noise_sigma
    timesteps = torch.zeros(3, dtype=torch.long)
    scheduler.add_noise(TWO_LEVEL.expand(3, -1, -1, -1), torch.zeros(3, 1, 16, 16), timesteps)
    scheduler.add_noise(CONSTANT.expand(1, -1, -1, -1), torch.zeros(1, 1, 16, 16), timesteps[:1])
    expected = (3 * torch.sigmoid(torch.tensor(1.0)).item() + 0.5) / 4
    assert scheduler.init_noise_sigma == pytest.approx(expected, rel=1e-6)
    scheduler.save_pretrained(tmp_path)
    loaded = EntropyScaledDDPMScheduler.from_pretrained(tmp_path)
    assert loaded.config.noise_scale == pytest.approx(expected, rel=1e-6)
    assert loaded.init_noise_sigma == scheduler.noise_scale
    assert torch.equal(loaded.alphas_cumprod, scheduler.alphas_cumprod)


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_step_recovers_x0_from_the_true_target_and_uses_the_posterior_scaled_by_s(prediction_type):
    scheduler = build_noise_scheduler("entropy_scaled", 1000, 1e-4, 0.02, prediction_type)
    clean = TWO_LEVEL.expand(2, -1, -1, -1)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
    index = 400
    timesteps = torch.full((2,), index)
    z = scheduler.add_noise(clean, noise, timesteps)
    s = scheduler.noise_scale
    target = {"epsilon": noise, "sample": clean, "v_prediction": scheduler.get_velocity(clean, noise, timesteps)}[prediction_type]
    output = scheduler.step(target, index, z, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(output.pred_original_sample, clean, atol=1e-4, rtol=0)
    # By hand (Ho et al. (7)) with the true x_0: mean from x_0 and z_t, plus s * sigma_t times the step's noise.
    betas = scheduler.betas.double()
    alpha_bar = torch.cumprod(1 - betas, 0)
    beta, abar, abar_prev = betas[index], alpha_bar[index], alpha_bar[index - 1]
    mean = abar_prev.sqrt() * beta / (1 - abar) * clean + (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar) * z
    sigma = ((1 - abar_prev) / (1 - abar) * beta).sqrt()
    step_noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(output.prev_sample, (mean + s * sigma * step_noise).float(), atol=1e-4, rtol=0)


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="entropy_mode='pixel' is unknown"):
        EntropyScaledDDPMScheduler(entropy_mode="pixel")
    with pytest.raises(ValueError, match="trained_betas has 3 values but num_train_timesteps=1000"):
        EntropyScaledDDPMScheduler(trained_betas=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="every beta must lie strictly between 0 and 1"):
        EntropyScaledDDPMScheduler(num_train_timesteps=2, trained_betas=[0.1, 1.0])
    with pytest.raises(ValueError, match="num_train_timesteps=1 is too small"):
        EntropyScaledDDPMScheduler(num_train_timesteps=1)
    with pytest.raises(ValueError, match="noise_scale=1.5 must lie in"):
        EntropyScaledDDPMScheduler(noise_scale=1.5)
    with pytest.raises(ValueError, match="variance_type='learned' is not supported"):
        EntropyScaledDDPMScheduler(variance_type="learned")


def tiny_unet() -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)


def test_pipeline_starts_from_noise_of_scale_s():
    unet = tiny_unet()
    scheduler = EntropyScaledDDPMScheduler(num_train_timesteps=10, beta_end=0.2, noise_scale=0.7)
    first_inputs = []
    unet.register_forward_pre_hook(lambda module, args: first_inputs.append(args[0].clone()) if not first_inputs else None)
    pipeline = EntropyScaledDDPMPipeline(unet=unet, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(batch_size=64, num_inference_steps=10, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert images.shape == (64, 8, 8, 1)
    assert first_inputs[0].std().item() == pytest.approx(0.7, rel=0.05)  # 4096 draws: about 1% standard error


def test_pipeline_with_a_stock_scheduler_is_the_ddpm_pipeline():
    unet = tiny_unet()
    scheduler = DDPMScheduler(num_train_timesteps=10, beta_end=0.2)
    kwargs = dict(batch_size=2, num_inference_steps=10, output_type="np")
    ours = EntropyScaledDDPMPipeline(unet=unet, scheduler=scheduler)(generator=torch.Generator().manual_seed(5), **kwargs).images
    stock = DDPMPipeline(unet=unet, scheduler=scheduler)(generator=torch.Generator().manual_seed(5), **kwargs).images
    assert (ours == stock).all()
