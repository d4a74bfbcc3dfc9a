"""Entropy-scaled diffusion (DES): DDPM whose Gaussian noise is scaled by s = sigmoid(entropy of the pixels).

The process, as implemented here (training and sampling use the same definitions):

* Noise scale. H is the Shannon entropy, in bits, of the normalised 256-bin histogram of the clean pixel values
  over [min, max] of the group they belong to: the whole batch (`entropy_mode="batch"`, the seeds' version) or
  each image (`entropy_mode="image"`). A constant group has entropy 0. The noise scale is s = sigmoid(H), so
  s lies in [0.5, 1).
* Forward process: z_t = sqrt(abar_t) x_0 + s sqrt(1 - abar_t) eps, eps ~ N(0, I), with abar_t the cumulative
  product of (1 - beta) of the base schedule (any betas; `build_noise_scheduler` passes them as `trained_betas`).
  Equivalently z_t = s z'_t, where z'_t is the standard DDPM process applied to x_0 / s.
* What the network predicts (`prediction_type`): eps ("epsilon"), x_0 ("sample"), or
  v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 / s ("v_prediction", the usual v of the x_0 / s process).
  So the training targets are `noise`, `clean` and `get_velocity(clean, noise, t)`, as for DDPM.
* Reverse step: x0_hat = (z_t - s sqrt(1 - abar_t) eps_hat) / sqrt(abar_t) (or sqrt(abar_t) z_t -
  s sqrt(1 - abar_t) v_hat), clipped like DDPM's; the mean is DDPM's posterior mean
  sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0_hat + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) z_t
  (s cancels, since it scales z_t and z_{t-1} alike); the variance is s^2 sigma_t^2, with sigma_t^2 the posterior
  variance ("fixed_small") or beta_t ("fixed_large").
* Initial noise: z_T ~ N(0, s^2 I), since sqrt(abar_T) is about 0; `init_noise_sigma` is s.
* s at sampling time: `noise_scale`, the mean of s over every training image `add_noise` has seen (so a
  statistic of the data at the training batch size, not of the weights), written into the config by
  `save_pretrained`. In per-image mode each training image had its own s, which a sampler cannot know before the
  image exists: sampling then uses the mean s, an approximation.

This file imports only numpy, torch, diffusers and its sibling `schedule_options` (which imports nothing), so the
two travel with a saved pipeline as remote code.
"""

import math

import numpy as np
import torch
from diffusers import DDPMScheduler
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

from .schedule_options import check_schedule_options

ENTROPY_MODES = ("batch", "image")


def histogram_entropy(images: torch.Tensor, per_image: bool, num_bins: int = 256) -> torch.Tensor:
    """Entropy in bits of the pixel histogram over [min, max]: shape (N,) per image, or () for the whole batch."""
    groups = images.detach().float().reshape(images.shape[0] if per_image else 1, -1)
    low = groups.amin(dim=1, keepdim=True)
    width = groups.amax(dim=1, keepdim=True) - low
    # A constant group (width 0) falls wholly into bin 0, hence entropy 0, without dividing by zero.
    bins = ((groups - low) / width.clamp_min(torch.finfo(groups.dtype).tiny) * num_bins).long().clamp_(max=num_bins - 1)
    # One bincount for all groups: group g counts into slots g * num_bins .. (g + 1) * num_bins - 1.
    offsets = torch.arange(groups.shape[0], device=groups.device)[:, None] * num_bins
    counts = torch.bincount((bins + offsets).flatten(), minlength=groups.shape[0] * num_bins)
    probabilities = counts.reshape(groups.shape[0], num_bins) / groups.shape[1]
    entropy = -torch.special.xlogy(probabilities, probabilities).sum(dim=1) / math.log(2)  # xlogy(0, 0) = 0
    return entropy if per_image else entropy[0]


class EntropyScaledDDPMScheduler(DDPMScheduler):
    """DDPM with noise scaled by the pixel entropy of the clean data (module docstring: the whole process).

    Args: those of `DDPMScheduler` (betas from `trained_betas` or a diffusers `beta_schedule`), less
    `rescale_betas_zero_snr`, with `variance_type` "fixed_small" or "fixed_large", plus:
        entropy_mode (`"batch"` or `"image"`): one s per batch (the seeds') or one per image.
        num_histogram_bins (`int`, defaults to 256): bins of the pixel histogram.
        noise_scale (`float`, *optional*): s used for sampling; measured by `add_noise` during training and
            saved with the config. Unknown (None) for a scheduler that has not seen data.
    """

    # Our __init__ registers its own arguments, then DDPMScheduler's registers its arguments over them: keep out the
    # one we do not take.
    ignore_for_config = ["rescale_betas_zero_snr"]

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        entropy_mode: str = "batch",
        num_histogram_bins: int = 256,
        noise_scale: float | None = None,
    ):
        check_schedule_options(num_train_timesteps, beta_start, beta_end, prediction_type, variance_type)
        if trained_betas is not None and len(trained_betas) != num_train_timesteps:
            raise ValueError(f"trained_betas has {len(trained_betas)} values but num_train_timesteps={num_train_timesteps}: give one beta per timestep.")
        if entropy_mode not in ENTROPY_MODES:
            raise ValueError(f"entropy_mode={entropy_mode!r} is unknown: use 'batch' (one s per batch) or 'image' (one per image).")
        if num_histogram_bins < 2:
            raise ValueError(f"num_histogram_bins={num_histogram_bins} is too small: use at least 2 (256 is the seeds').")
        if noise_scale is not None and not 0 < noise_scale <= 1:
            raise ValueError(f"noise_scale={noise_scale} must lie in (0, 1] (s = sigmoid(entropy)), or be None before training.")
        # Every DDPMScheduler option is passed on: the parent registers the config again, and an option left out
        # would be recorded at its default.
        super().__init__(
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule=beta_schedule,
            trained_betas=trained_betas,
            variance_type=variance_type,
            clip_sample=clip_sample,
            prediction_type=prediction_type,
            thresholding=thresholding,
            dynamic_thresholding_ratio=dynamic_thresholding_ratio,
            clip_sample_range=clip_sample_range,
            sample_max_value=sample_max_value,
            timestep_spacing=timestep_spacing,
            steps_offset=steps_offset,
        )
        if not bool(((self.betas > 0) & (self.betas < 1)).all()):
            raise ValueError("every beta must lie strictly between 0 and 1: check beta_start, beta_end or trained_betas.")
        # Running sum of s over the images seen by add_noise, kept on the data's device (no sync per step).
        self._noise_scale_sum = 0.0
        self._noise_scale_count = 0
        self.last_noise_scale = None

    @property
    def noise_scale(self) -> float:
        """s for sampling: the mean s of the images seen by `add_noise`, else the configured `noise_scale`."""
        if self._noise_scale_count:
            return float(self._noise_scale_sum) / self._noise_scale_count
        if self.config.noise_scale is None:
            raise ValueError("noise_scale is unknown: train with this scheduler (add_noise measures s) or pass noise_scale=... to it.")
        return self.config.noise_scale

    @property
    def init_noise_sigma(self) -> float:
        """Standard deviation of the initial noise z_T: s."""
        return self.noise_scale

    @init_noise_sigma.setter
    def init_noise_sigma(self, unit_noise_sigma: float) -> None:
        # DDPMScheduler.__init__ stores the unit-noise value 1.0 here; this process derives it from noise_scale.
        pass

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs) -> None:
        # Sampling needs the measured s: it travels in the config.
        if self._noise_scale_count:
            self.register_to_config(noise_scale=self.noise_scale)
        super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    def noise_scale_of(self, original_samples: torch.Tensor) -> torch.Tensor:
        """s = sigmoid(entropy) of clean samples, shaped to broadcast against them: (N, 1, ..., 1) or ()."""
        per_image = self.config.entropy_mode == "image"
        scale = torch.sigmoid(histogram_entropy(original_samples, per_image, self.config.num_histogram_bins))
        if per_image:
            scale = scale.reshape(-1, *([1] * (original_samples.ndim - 1)))
        return scale.to(original_samples.dtype)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor) -> torch.Tensor:
        """z_t = sqrt(abar_t) x_0 + s sqrt(1 - abar_t) eps, with s measured on `original_samples`.

        Also adds s to the running mean that becomes `noise_scale`, and keeps the per-image s of this call in
        `last_noise_scale` (shape (N,)) for logging.
        """
        scale = self.noise_scale_of(original_samples)
        self.last_noise_scale = scale.reshape(-1).expand(original_samples.shape[0])
        self._noise_scale_sum = self._noise_scale_sum + self.last_noise_scale.float().sum()
        self._noise_scale_count += original_samples.shape[0]
        return super().add_noise(original_samples, scale * noise, timesteps)

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor) -> torch.Tensor:
        """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 / s for clean `sample`, s measured on it as in `add_noise`."""
        return super().get_velocity(sample / self.noise_scale_of(sample), noise, timesteps)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> DDPMSchedulerOutput | tuple:
        """One reverse step z_t -> z_{t-1}, with s = `noise_scale` (module docstring, "Reverse step")."""
        t = timestep
        prev_t = self.previous_timestep(t)
        scale = self.noise_scale

        # 1. compute alphas, betas
        alpha_prod_t = self.alphas_cumprod[t]
        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev
        current_beta_t = 1 - current_alpha_t

        # 2. predicted x_0 from z_t = sqrt(abar_t) x_0 + s sqrt(1 - abar_t) eps
        if self.config.prediction_type == "epsilon":
            pred_original_sample = (sample - scale * beta_prod_t**0.5 * model_output) / alpha_prod_t**0.5
        elif self.config.prediction_type == "sample":
            pred_original_sample = model_output
        else:
            pred_original_sample = alpha_prod_t**0.5 * sample - scale * beta_prod_t**0.5 * model_output

        # 3. clip or threshold x_0 as DDPMScheduler does
        if self.config.thresholding:
            pred_original_sample = self._threshold_sample(pred_original_sample)
        elif self.config.clip_sample:
            pred_original_sample = pred_original_sample.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)

        # 4. posterior mean, formula (7) of Ho et al.: s cancels because it scales z_t and z_{t-1} alike
        pred_original_sample_coeff = alpha_prod_t_prev**0.5 * current_beta_t / beta_prod_t
        current_sample_coeff = current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t
        pred_prev_sample = pred_original_sample_coeff * pred_original_sample + current_sample_coeff * sample

        # 5. add noise of standard deviation s * sigma_t
        if t > 0:
            variance_noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype)
            pred_prev_sample = pred_prev_sample + scale * self._get_variance(t) ** 0.5 * variance_noise

        if not return_dict:
            return (pred_prev_sample, pred_original_sample)
        return DDPMSchedulerOutput(prev_sample=pred_prev_sample, pred_original_sample=pred_original_sample)
