"""Plot beta_t and alpha-bar_t against t for every noise schedule, on one figure with two panels.

The entropy-scaled schedule (DES) uses the betas of its base schedule (linear by default) and scales the noise by
s, so it has no curve of its own here.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..schedulers import NOISE_SCHEDULES, build_noise_scheduler  # noqa: E402


def plot_schedules(output: str, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
    figure, (beta_axis, alpha_bar_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    t = range(1, num_train_timesteps + 1)  # index i is t = i + 1 (schedulers.scheduling_beta_formula)
    for name in NOISE_SCHEDULES:
        if name == "entropy_scaled":
            continue
        scheduler = build_noise_scheduler(name, num_train_timesteps, beta_start, beta_end, "epsilon")
        beta_axis.plot(t, scheduler.betas.numpy(), label=name)
        alpha_bar_axis.plot(t, scheduler.alphas_cumprod.numpy(), label=name)
    # "cosine" (diffusers' squaredcos_cap_v2) ends at beta 0.999, the others at beta_end: a log scale shows all.
    beta_axis.set(yscale="log", xlabel="t", ylabel=r"$\beta_t$", title=r"$\beta_t$ (log scale)")
    alpha_bar_axis.set(xlabel="t", ylabel=r"$\bar\alpha_t$", title=r"$\bar\alpha_t = \prod_{s \leq t} (1 - \beta_s)$")
    for axis in (beta_axis, alpha_bar_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(
        f"Noise schedules, T = {num_train_timesteps}, beta_start = {beta_start:g}, beta_end = {beta_end:g} "
        "(entropy_scaled: its base schedule's betas, noise scaled by s)",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)
