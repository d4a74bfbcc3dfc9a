"""DDPM noise-prediction training (Ho et al. 2020) as an objective for the shared training loop."""

from __future__ import annotations

import argparse

import torch
from diffusers import DDPMPipeline, DDPMScheduler
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_snr

from ..argument_types import at_least_two, non_negative_float, non_negative_int, open_unit_interval, positive_float, real
from ..pipelines import AutoguidedDDPMPipeline, ClassConditionalDDPMPipeline, ClusterConditionalDDPMPipeline, EntropyScaledDDPMPipeline
from ..sampling import DEFAULT_SAMPLER, SAMPLERS
from ..schedulers import ENTROPY_MODES, NOISE_SCHEDULES, EntropyScaledDDPMScheduler, build_noise_scheduler, check_schedule_options, portable_scheduler
from ..schedulers.schedule_options import PREDICTION_TYPES, VARIANCE_TYPES
from .arguments import ArgumentError
from .objective import LOSSES, Objective
from .recipes import CPU_RECIPE


def add_ddpm_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("ddpm")
    group.add_argument("--ddpm_num_steps", type=at_least_two, default=1000, help="T, the number of diffusion steps.")
    group.add_argument(
        "--noise_schedule", choices=NOISE_SCHEDULES, default=None,
        help="Betas: linear (the coursework's, the default), geometric, cosine_custom, cosine, sigmoid, scaled_linear, "
             "or entropy_scaled (DES: noise scaled by sigmoid(pixel entropy)).",
    )
    group.add_argument("--ddpm_beta_schedule", default=None, help="Instead of --noise_schedule: a diffusers beta schedule as named there (linear, scaled_linear, squaredcos_cap_v2, sigmoid).")
    group.add_argument("--beta_start", type=open_unit_interval, default=1e-4)
    group.add_argument("--beta_end", type=open_unit_interval, default=0.02)
    group.add_argument("--prediction_type", choices=PREDICTION_TYPES, default="epsilon")
    group.add_argument(
        "--snr_gamma", type=non_negative_float, default=None,
        help="Min-SNR-gamma loss weighting (Hang et al. 2023): each timestep's loss is weighted as an x0 loss clipped "
             "at SNR gamma, so the easy low-noise steps stop dominating; 0 turns it off. Default: the recipe's "
             "(5 on a CPU, off on a GPU).",
    )
    group.add_argument(
        "--timestep_sampling", choices=TIMESTEP_SAMPLING, default="uniform",
        help="How training draws each image's timestep: uniform over 0..T-1, or logit_normal (Esser et al. 2024): "
             "t/T = sigmoid(n), n ~ N(--logit_mean, --logit_std^2), most steps in the middle of the schedule. Default: "
             "the recipe's (logit_normal on a CPU, uniform on a GPU and for entropy_scaled).",
    )
    group.add_argument("--logit_mean", type=real, default=None, help="--timestep_sampling logit_normal: the mean of n (default 0: t = T/2).")
    group.add_argument("--logit_std", type=positive_float, default=None, help="--timestep_sampling logit_normal: the spread of n (default 1).")
    group.add_argument(
        "--variance_type", choices=VARIANCE_TYPES, default="fixed_small",
        help="Reverse variance: posterior variance (fixed_small) or beta_t (fixed_large, the seeds' Algorithm 18.2).",
    )
    group.add_argument(
        "--sampler", choices=tuple(SAMPLERS), default=DEFAULT_SAMPLER,
        help="Sampler of the sample grids and in-training evaluation, on the trained betas (default: dpmsolver-sde, 20 steps; "
             "dpmsolver: 20; ddim: 50; ddpm: all T ancestral steps). entropy_scaled keeps its own ancestral sampler (100 strided steps).",
    )
    group.add_argument(
        "--autoguidance_scale", type=non_negative_float, default=None,
        help="Autoguidance (Karras et al. 2024): sample grids and the saved pipeline guide the model by its own EMA from "
             "--autoguidance_guide_fraction of the steps, out = guide + w (model - guide), at two model calls per "
             f"sampling step; 1 turns it off (a stock DDPMPipeline). Default: the recipe's ({CPU_RECIPE.autoguidance_scale:g} on a CPU, off on a GPU; "
             "off for --class_conditional, which has classifier-free guidance, and entropy_scaled).",
    )
    group.add_argument(
        "--autoguidance_guide_fraction", type=open_unit_interval, default=1 / 3,
        help="--autoguidance_scale: how far through the steps the guiding EMA is taken, between 0.8 and 1 times this (default a third).",
    )
    group.add_argument(
        "--cluster_conditioning", type=non_negative_int, default=0, metavar="K",
        help="Label-free conditioning (Bao et al. 2022): split the training images into K k-means clusters of their "
             "pixels (from --seed) and train on each image's cluster as --class_conditional does on labels; the saved "
             "pipeline draws each image's cluster by the clusters' sizes (a batch holds each cluster in proportion), "
             "so it stays an unconditional generator; "
             "0: off. Default: the recipe's (on a CPU 100, at most one per 500 training images; off on a GPU, for "
             "--class_conditional and for entropy_scaled).",
    )
    group.add_argument("--des_entropy_mode", choices=ENTROPY_MODES, default="batch", help="entropy_scaled: one noise scale per batch (the seeds') or per image.")
    group.add_argument(
        "--des_base_schedule", choices=[name for name in NOISE_SCHEDULES if name != "entropy_scaled"], default="linear",
        help="entropy_scaled: the schedule whose betas it uses.",
    )


TIMESTEP_SAMPLING = ("uniform", "logit_normal")


# The flags that set the scheduler options, for messages in the user's terms.
SCHEDULE_FLAGS = {
    "num_train_timesteps": "--ddpm_num_steps", "beta_start": "--beta_start", "beta_end": "--beta_end",
    "prediction_type": "--prediction_type", "variance_type": "--variance_type",
}


def logit_normal_of(args: argparse.Namespace) -> tuple[float, float] | None:
    """(mean, std) of --timestep_sampling logit_normal; None for uniform, whose runs must not set either."""
    if args.timestep_sampling != "logit_normal":
        given = [flag for flag, value in (("--logit_mean", args.logit_mean), ("--logit_std", args.logit_std)) if value is not None]
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise ArgumentError(f"{' and '.join(given)} {verb} to --timestep_sampling logit_normal only: add that or drop {given[0]}.")
        return None
    return (0.0 if args.logit_mean is None else args.logit_mean, 1.0 if args.logit_std is None else args.logit_std)


def autoguidance_of(args: argparse.Namespace) -> tuple[float, float] | None:
    """(w, guide fraction) of --autoguidance_scale; None when it is 1 (off)."""
    if args.autoguidance_scale is None or args.autoguidance_scale == 1:
        return None
    for flag, conflicts in (("--class_conditional", args.class_conditional), ("--noise_schedule entropy_scaled", args.noise_schedule == "entropy_scaled")):
        if conflicts:
            raise ArgumentError(f"--autoguidance_scale guides unconditional models on a fixed schedule, not {flag}: drop one of the two"
                                + (" (class-conditional pipelines take --guidance_scale when sampling)." if "class" in flag else "."))
    return args.autoguidance_scale, args.autoguidance_guide_fraction


def clusters_of(args: argparse.Namespace) -> int:
    """K of --cluster_conditioning (0: off), refused with what it cannot go with."""
    for flag, conflicts in (("--class_conditional", args.class_conditional), ("--noise_schedule entropy_scaled", args.noise_schedule == "entropy_scaled")):
        if args.cluster_conditioning and conflicts:
            raise ArgumentError(f"--cluster_conditioning conditions on clusters of the images, not with {flag}: drop one of the two.")
    return args.cluster_conditioning


def build_ddpm_scheduler(args: argparse.Namespace) -> DDPMScheduler:
    try:
        check_schedule_options(args.ddpm_num_steps, args.beta_start, args.beta_end, args.prediction_type, args.variance_type, SCHEDULE_FLAGS)
    except ValueError as error:
        raise ArgumentError(str(error)) from None
    if args.ddpm_beta_schedule is None:
        try:
            return build_noise_scheduler(
                args.noise_schedule or "linear", args.ddpm_num_steps, args.beta_start, args.beta_end, args.prediction_type,
                args.variance_type, des_entropy_mode=args.des_entropy_mode, des_base_schedule=args.des_base_schedule,
            )
        except ValueError as error:
            raise ArgumentError(str(error)) from None
    if args.noise_schedule is not None:
        raise ArgumentError("--noise_schedule and --ddpm_beta_schedule both choose the betas: pass only one.")
    try:
        return DDPMScheduler(
            num_train_timesteps=args.ddpm_num_steps,
            beta_schedule=args.ddpm_beta_schedule,
            beta_start=args.beta_start,
            beta_end=args.beta_end,
            prediction_type=args.prediction_type,
            variance_type=args.variance_type,
        )
    except NotImplementedError:
        raise ArgumentError(
            f"--ddpm_beta_schedule {args.ddpm_beta_schedule!r} is unknown: use linear, scaled_linear, squaredcos_cap_v2 or sigmoid."
        ) from None


class DDPMObjective(Objective):
    """Noise a clean batch at random timesteps and regress the network's output on the target.

    Class-conditional runs (`use_classes`) pass each image's label, dropped to the null class with probability
    --label_dropout, and save a `ClassConditionalDDPMPipeline`; cluster-conditional runs (`use_clusters`) pass its
    k-means cluster the same way and save a `ClusterConditionalDDPMPipeline`, which draws the clusters itself. With
    `autoguidance` (w, guide fraction) the trainer keeps the guide (`training.autoguidance`) and the pipeline is an
    `AutoguidedDDPMPipeline` (or the cluster pipeline with its guide)."""

    default_loss = "mse"
    cluster_centroids: torch.Tensor | None = None  # cluster-conditional runs: the (K, D) k-means centroids of the pixels
    cluster_sizes: torch.Tensor | None = None  # and each cluster's share of the training images, (K,)

    def __init__(self, scheduler: DDPMScheduler, loss: str = "mse", sampler: str = DEFAULT_SAMPLER,
                 snr_gamma: float | None = None, logit_normal: tuple[float, float] | None = None,
                 autoguidance: tuple[float, float] | None = None, num_clusters: int = 0):
        snr_gamma = snr_gamma or None  # 0: off
        if snr_gamma is not None and isinstance(scheduler, EntropyScaledDDPMScheduler):
            # Its noise level depends on each image's entropy, so alphas_cumprod does not give the SNR.
            raise ArgumentError("--snr_gamma needs a fixed schedule's SNR; entropy_scaled has none: drop one of the two.")
        self.scheduler = scheduler
        self.loss_fn = LOSSES[loss]
        self.sampler = sampler
        self.snr_gamma = snr_gamma
        self.logit_normal = logit_normal  # (mean, std) of logit(t / T); None: uniform timesteps
        self.autoguidance = autoguidance
        self.num_clusters = num_clusters  # --cluster_conditioning K; the trainer finds the clusters (`use_clusters`)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DDPMObjective":
        return cls(build_ddpm_scheduler(args), args.loss or cls.default_loss, args.sampler, args.snr_gamma, logit_normal_of(args),
                   autoguidance_of(args), clusters_of(args))

    @property
    def num_train_timesteps(self) -> int:
        return self.scheduler.config.num_train_timesteps

    def use_clusters(self, centroids: torch.Tensor, sizes: torch.Tensor, label_dropout: float) -> None:
        """Train on cluster indices as class labels; the saved pipeline draws them by `sizes`."""
        self.use_classes([str(index) for index in range(len(centroids))], label_dropout)
        self.cluster_centroids, self.cluster_sizes = centroids, sizes

    @property
    def labels_in_grid(self) -> bool:
        return self.class_names is not None and self.cluster_sizes is None  # the cluster pipeline draws its own

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The clusters of a cluster-conditional run, so that a resume trains on the same ones and a checkpoint's
        pipeline draws them."""
        if self.cluster_centroids is None:
            return {}
        return {"cluster_centroids": self.cluster_centroids, "cluster_sizes": self.cluster_sizes}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "cluster_centroids" in state:
            self.cluster_centroids, self.cluster_sizes = state["cluster_centroids"], state["cluster_sizes"]

    def target(self, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        prediction_type = self.scheduler.config.prediction_type
        if prediction_type == "epsilon":
            return noise
        if prediction_type == "sample":
            return clean
        return self.scheduler.get_velocity(clean, noise, timesteps)

    def loss(self, model, clean: torch.Tensor, generator: torch.Generator | None = None,
             class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean loss on one batch; `generator` (on CPU) fixes noise and timesteps (and dropped labels), e.g. for
        validation; `class_labels` for class-conditional runs."""
        # Drawn on the device in training (no host work or transfer in a step), on the generator's CPU otherwise.
        device = clean.device if generator is None else "cpu"
        noise = torch.randn(clean.shape, generator=generator, device=device).to(clean.device)
        timesteps = self.draw_timesteps(clean.shape[0], generator, device).to(clean.device)
        noisy = self.scheduler.add_noise(clean, noise, timesteps)
        if class_labels is None:
            prediction = model(noisy, timesteps).sample
        else:
            prediction = model(noisy, timesteps, class_labels=self.drop_labels(class_labels, generator)).sample
        prediction, target = prediction.float(), self.target(clean, noise, timesteps).float()
        if self.snr_gamma is None:
            return self.loss_fn(prediction, target)
        per_image = self.loss_fn(prediction, target, reduction="none").mean(dim=tuple(range(1, clean.ndim)))
        return (per_image * self.min_snr_weights(timesteps)).mean()

    def draw_timesteps(self, batch_size: int, generator: torch.Generator | None, device) -> torch.Tensor:
        """One training timestep per image: uniform, or t = floor(T u) with logit(u) normal (diffusers' SD3 density)."""
        if self.logit_normal is None:
            return torch.randint(0, self.num_train_timesteps, (batch_size,), generator=generator, device=device)
        mean, std = self.logit_normal
        u = compute_density_for_timestep_sampling("logit_normal", batch_size, mean, std, device=device, generator=generator)
        return (u * self.num_train_timesteps).long().clamp(max=self.num_train_timesteps - 1)

    def min_snr_weights(self, timesteps: torch.Tensor) -> torch.Tensor:
        """min(SNR, gamma) as a weight on the x0 error, written for the network's target: / SNR for epsilon,
        / (SNR + 1) for v, as is for x0 (Hang et al. 2023, eq. 8 and its appendix)."""
        snr = compute_snr(self.scheduler, timesteps)
        clipped = snr.clamp(max=self.snr_gamma)
        prediction_type = self.scheduler.config.prediction_type
        if prediction_type == "epsilon":
            return clipped / snr
        if prediction_type == "v_prediction":
            return clipped / (snr + 1)
        return clipped

    def pipeline(self, model, guide=None) -> DDPMPipeline | EntropyScaledDDPMPipeline | AutoguidedDDPMPipeline:
        """DES needs its own pipeline and scheduler (remote code), and so does autoguidance (`guide`, the guiding
        model); every other schedule saves as stock diffusers."""
        if self.cluster_sizes is not None:
            return ClusterConditionalDDPMPipeline(unet=model, scheduler=portable_scheduler(self.scheduler), cluster_sizes=self.cluster_sizes.tolist(),
                                                  guide_unet=guide, guidance_scale=self.autoguidance[0] if guide is not None else 1.0)
        if guide is not None:
            return AutoguidedDDPMPipeline(unet=model, guide_unet=guide, scheduler=portable_scheduler(self.scheduler),
                                          guidance_scale=self.autoguidance[0])
        if self.class_names is not None:  # every schedule, DES included: it starts from init_noise_sigma
            scheduler = self.scheduler if isinstance(self.scheduler, EntropyScaledDDPMScheduler) else portable_scheduler(self.scheduler)
            return ClassConditionalDDPMPipeline(unet=model, scheduler=scheduler, class_names=self.class_names)
        if isinstance(self.scheduler, EntropyScaledDDPMScheduler):
            return EntropyScaledDDPMPipeline(unet=model, scheduler=self.scheduler)
        return DDPMPipeline(unet=model, scheduler=portable_scheduler(self.scheduler))

    def sampling_options(self) -> dict:
        return {"sampler": self.sampler}
