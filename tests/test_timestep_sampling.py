"""--timestep_sampling: which training timesteps a batch gets, uniform or logit-normal, against hand computation."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from diffusion_lab.commands.train_ddpm import parse_args
from diffusion_lab.training.arguments import ArgumentError
from diffusion_lab.training.ddpm_objective import DDPMObjective

T = 1000


class RecordTimesteps(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, noisy, timesteps):
        self.seen.append(timesteps)
        return type("Output", (), {"sample": torch.zeros_like(noisy)})


def timesteps_of_one_loss(objective, seed=3):
    model = RecordTimesteps()
    objective.loss(model, torch.zeros(8, 1, 4, 4), generator=torch.Generator().manual_seed(seed))
    return model.seen[0]


def test_uniform_draws_what_randint_draws_after_the_noise():
    objective = DDPMObjective.from_args(parse_args(["--timestep_sampling", "uniform"]))  # the GPU recipe's
    assert objective.logit_normal is None
    generator = torch.Generator().manual_seed(3)
    torch.randn((8, 1, 4, 4), generator=generator)  # the loss draws the noise first
    assert torch.equal(timesteps_of_one_loss(objective), torch.randint(0, T, (8,), generator=generator))


def test_logit_normal_timesteps_are_floor_of_T_sigmoid_of_a_normal_draw():
    objective = DDPMObjective.from_args(parse_args(["--timestep_sampling", "logit_normal", "--logit_mean", "0.5", "--logit_std", "2"]))
    assert objective.logit_normal == (0.5, 2.0)
    generator = torch.Generator().manual_seed(3)
    torch.randn((8, 1, 4, 4), generator=generator)
    by_hand = (torch.sigmoid(torch.normal(0.5, 2.0, (8,), generator=generator)) * T).floor().long()
    assert torch.equal(timesteps_of_one_loss(objective), by_hand)


@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (1.0, 0.5)])
def test_logit_normal_timesteps_have_the_quantiles_of_the_distribution(mean, std):
    """P(t < T q) = Phi((logit(q) - mean) / std): checked at q = 0.1, 0.5, 0.9 on 200,000 draws."""
    objective = DDPMObjective(DDPMScheduler(num_train_timesteps=T), logit_normal=(mean, std))
    timesteps = objective.draw_timesteps(200_000, torch.Generator().manual_seed(0), "cpu")
    assert timesteps.min() >= 0 and timesteps.max() <= T - 1
    for q in (0.1, 0.5, 0.9):
        expected = 0.5 * (1 + math.erf((math.log(q / (1 - q)) - mean) / std / math.sqrt(2)))
        assert (timesteps < T * q).double().mean().item() == pytest.approx(expected, abs=0.004)


def test_logit_flags_without_logit_normal_are_refused():
    with pytest.raises(ArgumentError, match="--logit_std applies to --timestep_sampling logit_normal only: add that or drop --logit_std"):
        DDPMObjective.from_args(parse_args(["--timestep_sampling", "uniform", "--logit_std", "2"]))
    with pytest.raises(ArgumentError, match="--logit_mean and --logit_std apply to --timestep_sampling logit_normal only"):
        DDPMObjective.from_args(parse_args(["--timestep_sampling", "uniform", "--logit_mean", "1", "--logit_std", "2"]))
    with pytest.raises(SystemExit):
        parse_args(["--timestep_sampling", "logit_normal", "--logit_std", "0"])
