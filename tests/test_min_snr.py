"""--snr_gamma: min-SNR-gamma loss weighting (Hang et al. 2023), against hand computation."""

import pytest
import torch
from diffusers import DDPMScheduler

from diffusion_lab.commands.train_ddpm import parse_args
from diffusion_lab.training.arguments import ArgumentError
from diffusion_lab.training.ddpm_objective import DDPMObjective

GAMMA = 5.0


class FixedOutput(torch.nn.Module):
    """A stand-in network whose output is a function of its noisy input and timesteps."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, noisy, timesteps):
        return type("Output", (), {"sample": self.output(noisy, timesteps)})


def draws(batch, T, seed):
    """The noise and timesteps `DDPMObjective.loss` draws from a CPU generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch.shape, generator=generator)
    timesteps = torch.randint(0, T, (batch.shape[0],), generator=generator)
    return noise, timesteps


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_the_weighted_loss_is_the_clipped_snr_times_the_x0_error(prediction_type):
    """Whatever the network predicts, the weighted loss equals mean_i min(SNR_i, gamma) * |x0_hat_i - x0_i|^2 / D,
    with x0_hat the clean image the prediction implies; the unweighted loss is the plain MSE on the target."""
    torch.manual_seed(0)
    T = 1000
    scheduler = DDPMScheduler(num_train_timesteps=T, prediction_type=prediction_type)
    clean = torch.rand(16, 1, 8, 8) * 2 - 1
    noise, timesteps = draws(clean, T, seed=3)
    alpha_bar = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    noisy = alpha_bar.sqrt() * clean + (1 - alpha_bar).sqrt() * noise
    x0_guess = torch.rand_like(clean) * 2 - 1  # what the stand-in network "believes" the clean image is
    eps_guess = (noisy - alpha_bar.sqrt() * x0_guess) / (1 - alpha_bar).sqrt()
    output = {"epsilon": eps_guess, "sample": x0_guess,
              "v_prediction": alpha_bar.sqrt() * eps_guess - (1 - alpha_bar).sqrt() * x0_guess}[prediction_type]
    model = FixedOutput(lambda noisy_in, t: output)

    snr = (alpha_bar / (1 - alpha_bar)).view(-1)
    x0_error = ((x0_guess - clean) ** 2).mean(dim=(1, 2, 3))
    expected = (snr.clamp(max=GAMMA) * x0_error).mean()
    weighted = DDPMObjective(scheduler, snr_gamma=GAMMA).loss(model, clean, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(weighted, expected, rtol=1e-4, atol=0)

    target = {"epsilon": noise, "sample": clean, "v_prediction": alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * clean}
    plain = DDPMObjective(scheduler).loss(model, clean, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(plain, ((output - target[prediction_type]) ** 2).mean(), rtol=1e-5, atol=0)


def test_weights_at_hand_computed_timesteps():
    """epsilon: min(SNR, 5)/SNR is 1 where SNR <= 5 (high noise) and 5/SNR below it (low noise)."""
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    objective = DDPMObjective(scheduler, snr_gamma=GAMMA)
    timesteps = torch.tensor([0, 10, 999])
    alpha_bar = scheduler.alphas_cumprod[timesteps].double()
    snr = alpha_bar / (1 - alpha_bar)
    assert snr[0] > 5 and snr[2] < 5
    expected = torch.stack([5 / snr[0], 5 / snr[1], torch.tensor(1.0, dtype=torch.float64)])
    torch.testing.assert_close(objective.min_snr_weights(timesteps).double(), expected, rtol=1e-5, atol=0)


def test_snr_gamma_is_refused_with_the_entropy_scaled_schedule():
    args = parse_args(["--noise_schedule", "entropy_scaled", "--snr_gamma", "5"])
    with pytest.raises(ArgumentError, match="--snr_gamma needs a fixed schedule's SNR; entropy_scaled has none"):
        DDPMObjective.from_args(args)
