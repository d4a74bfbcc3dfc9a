"""The experiment table's inputs: the budgets every variant gets, and the variants read from `experiments/*.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

COLD_SCRIPT = "train_cold.py"
# The training script a config names, and the `diffusion-lab` command the runner starts for it.
TRAINING_COMMANDS = {"train_ddpm.py": "train-ddpm", COLD_SCRIPT: "train-cold"}
SEED = 0
# The optimisation of the seeds' experiments, which every row starts from (a row's own flags come after and win):
# train_ddpm.py's defaults moved to the time-to-quality recipe, and the table keeps measuring what it measured,
# DDPM rows with the plain (unweighted) loss, uniform timesteps, no clusters and no autoguidance.
_SEEDS_OPTIMISATION = ["--optimizer", "adam", "--learning_rate", "2e-4", "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
                       "--no-use_ema"]
SEEDS_RECIPE = {"train_ddpm.py": [*_SEEDS_OPTIMISATION, "--snr_gamma", "0", "--timestep_sampling", "uniform", "--cluster_conditioning", "0",
                                   "--autoguidance_scale", "1"], COLD_SCRIPT: _SEEDS_OPTIMISATION}


@dataclass(frozen=True)
class Budget:
    """What every variant gets: training steps and data, and the evaluation protocol."""

    train_steps: int
    train_batch_size: int
    max_train_samples: int | None  # None: all 60k MNIST training images (validation: the 10k test images)
    num_samples: int  # N generated images per row
    num_inference_steps: int | None  # DDPM-family sampling steps, strided; None: all T steps
    sample_batch_size: int
    checkpointing_steps: int


# tiny: for tests. small: the whole table on a 2-core CPU. medium: a GPU in minutes. full: a GPU (1000-step DDPM,
# 10k samples).
BUDGETS = {
    "tiny": Budget(train_steps=2, train_batch_size=16, max_train_samples=64, num_samples=16,
                   num_inference_steps=2, sample_batch_size=16, checkpointing_steps=1000),
    "small": Budget(train_steps=200, train_batch_size=64, max_train_samples=12800, num_samples=1000,
                    num_inference_steps=50, sample_batch_size=250, checkpointing_steps=100),
    "medium": Budget(train_steps=2000, train_batch_size=128, max_train_samples=None, num_samples=10000,
                     num_inference_steps=100, sample_batch_size=1000, checkpointing_steps=1000),
    "full": Budget(train_steps=20000, train_batch_size=128, max_train_samples=None, num_samples=10000,
                   num_inference_steps=None, sample_batch_size=1000, checkpointing_steps=2000),
}
# Conditional cold-diffusion rows restore the first N test images and are scored against the rest of the split,
# so their N is at most half of MNIST's 10,000 test images.
MAX_CONDITIONAL_SAMPLES = 5000

@dataclass(frozen=True)
class Sampling:
    """One way of drawing samples from a trained variant: its options of the pipeline call (cold diffusion's
    `algorithm` and `noise`, a class-conditional model's `guidance_scale`), and whether it restores test images
    (`conditional`) instead of generating."""

    name: str
    label: str
    algorithm: int | None = None
    noise: float | None = None
    guidance_scale: float | None = None
    conditional: bool = False

    def pipeline_options(self) -> dict:
        """The options set, as keyword arguments of the pipeline call."""
        return {key: value for key, value in (("algorithm", self.algorithm), ("noise", self.noise),
                                              ("guidance_scale", self.guidance_scale)) if value is not None}


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    script: str
    flags: tuple[str, ...]
    samplings: tuple[Sampling, ...]
    order: int = 100
    train_steps_factor: float = 1.0
    skip_budgets: dict | None = None  # budget -> why this variant is not run there

    @property
    def is_cold(self) -> bool:
        return self.script == COLD_SCRIPT

    def row_name(self, sampling: Sampling) -> str:
        return self.name if len(self.samplings) == 1 else f"{self.name}-{sampling.name}"


def load_variant(path: Path) -> Variant:
    """A variant from its JSON config; refuses unknown keys so a typo cannot silently change an experiment."""
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}): fix the file.") from None
    allowed = {"description", "script", "flags", "samplings", "order", "train_steps_factor", "skip_budgets"}
    unknown = set(config) - allowed
    if unknown or "script" not in config:
        raise ValueError(f"{path}: keys {sorted(unknown)} are unknown or 'script' is missing: use {sorted(allowed)}.")
    try:
        samplings = tuple(Sampling(**{"label": s["name"], **s}) for s in config.get("samplings", [{"name": "default", "label": "unconditional"}]))
    except TypeError as error:
        raise ValueError(f"{path}: a sampling has a key Sampling does not take ({error}): use {sorted(Sampling.__dataclass_fields__)}.") from None
    if config["script"] not in TRAINING_COMMANDS:
        raise ValueError(f"{path}: script {config['script']!r} is not a training script: use one of {', '.join(TRAINING_COMMANDS)}.")
    return Variant(
        name=path.stem, description=config.get("description", ""), script=config["script"], flags=tuple(config.get("flags", ())),
        samplings=samplings, order=config.get("order", 100), train_steps_factor=config.get("train_steps_factor", 1.0),
        skip_budgets=config.get("skip_budgets"),
    )


def load_variants(configs_dir: Path, only: list[str] | None = None) -> list[Variant]:
    paths = sorted(configs_dir.glob("*.json"))
    if not paths:
        raise FileNotFoundError(f"no *.json variant configs in {configs_dir}: pass --configs_dir experiments.")
    variants = sorted((load_variant(path) for path in paths), key=lambda v: (v.order, v.name))
    if only:
        names = {v.name for v in variants}
        missing = [name for name in only if name not in names]
        if missing:
            raise ValueError(f"--only {' '.join(missing)}: no such variant; known: {', '.join(sorted(names))}.")
        variants = [v for v in variants if v.name in only]
    return variants
