import torch
from diffusers import DDPMScheduler


def test_closed_form_q_xt_given_x0_matches_iterating_the_one_step_process():
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02)
    betas = scheduler.betas.double()
    generator = torch.Generator().manual_seed(0)
    x0 = torch.linspace(-1, 1, 8, dtype=torch.float64)
    draws = 20_000
    x = x0.expand(draws, -1).clone()
    checkpoints = {0: None, 99: None, 499: None, 999: None}
    for t in range(1000):
        # q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
        x = torch.sqrt(1 - betas[t]) * x + torch.sqrt(betas[t]) * torch.randn(x.shape, generator=generator, dtype=torch.float64)
        if t in checkpoints:
            checkpoints[t] = x.clone()
    for t, xt in checkpoints.items():
        alpha_bar = scheduler.alphas_cumprod[t].double()
        closed_form = scheduler.add_noise(x0.expand(draws, -1), torch.randn(draws, 8, generator=generator, dtype=torch.float64), torch.full((draws,), t))
        # Both have mean sqrt(abar) x0 and variance 1 - abar.
        torch.testing.assert_close(xt.mean(0), torch.sqrt(alpha_bar) * x0, atol=0.03, rtol=0)
        torch.testing.assert_close(xt.var(0), (1 - alpha_bar).expand(8), atol=0.03, rtol=0.05)
        torch.testing.assert_close(closed_form.mean(0), xt.mean(0), atol=0.04, rtol=0)
        torch.testing.assert_close(closed_form.var(0), xt.var(0), atol=0.04, rtol=0.05)


def test_linear_schedule_matches_the_coursework_formula():
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02)
    torch.testing.assert_close(scheduler.betas[0], torch.tensor(1e-4))
    torch.testing.assert_close(scheduler.betas[-1], torch.tensor(0.02))
    torch.testing.assert_close(scheduler.alphas_cumprod, torch.cumprod(1 - scheduler.betas, 0))
