"""`python -m diffusion_lab.experiments`: train and evaluate every variant in `experiments/`, and tabulate them.

    python -m diffusion_lab.experiments --budget small                  # the whole table on a CPU
    python -m diffusion_lab.experiments --budget tiny --only linear unet # a smoke run
    python -m diffusion_lab.experiments --budget medium --launcher "accelerate launch"  # on a GPU, minutes
    python -m diffusion_lab.experiments --budget full --launcher "accelerate launch"    # on a GPU, hours

Each `experiments/<variant>.json` names a training script and its flags, and the samplings to evaluate (cold
diffusion: Algorithm 1 or 2, conditional or unconditional; these are sampling options of one trained model).
The runner is a thin orchestrator over the project's commands: it trains in a subprocess (`train_ddpm.py` /
`train_cold.py`), draws samples with `diffusion_lab.sample`, scores them with `diffusion_lab.evaluate`, draws the
loss curves with `diffusion_lab.plot` and the schedules with `diffusion_lab.plot_schedules`. Every variant gets
the same budget (optimizer steps, batch size, training images) and the same protocol (number of samples, sampler
and its steps, seed); a config may scale its steps (`train_steps_factor`) for a compute-matched comparison.

Several variants share one device at once when that finishes the table sooner: `--concurrency auto` (the
default on CUDA) measures it first (`diffusion_lab.concurrency`: aggregate training steps/s of 1, 2, 4, ...
concurrent runs of the model most variants use, recorded in `concurrency.json` and reused on resume), then runs
the variants longest first, each in a runner subprocess of its own, as many at once as was chosen.

Resume-safe: a finished training (`<run>/experiment_train.json`) or evaluation (`<row>/row.json`) is not redone;
an interrupted training continues from its latest checkpoint.

Writes to `--output_dir` (default `runs/experiments/<budget>`): `runs/<variant>/` (pipelines, logs),
`rows/<row>/` (samples, evaluation.json, row.json), `figures/` (exp_<row>.png sample grids, loss_<variant>.png,
schedules.png) and `results.md` / `results.csv`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .cli import run_command
from .training.checkpoints import complete_checkpoints

COLD_SCRIPT = "train_cold.py"
SEED = 0
# The optimisation of the seeds' experiments, which every row starts from (a row's own flags come after and win):
# train_ddpm.py's defaults moved to the time-to-quality recipe, and the table keeps measuring what it measured.
SEEDS_RECIPE = ["--optimizer", "adam", "--learning_rate", "2e-4", "--lr_scheduler", "constant", "--lr_warmup_steps", "0",
                "--no-use_ema"]


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

# The table's columns, in order; `results.csv` has all of them, `results.md` the readable subset.
COLUMNS = (
    "row", "variant", "sampling", "description", "script", "flags", "status",
    "train_steps", "train_batch_size", "train_seconds", "sample_seconds", "eval_seconds",
    "num_samples", "sampler",
    "digit_fd", "digit_is", "digit_confidence", "psnr", "ssim", "psnr_paired", "ssim_paired", "class_accuracy",
    "train_loss", "val_loss",
)
METRICS = ("digit_fd", "digit_is", "digit_confidence", "psnr", "ssim", "psnr_paired", "ssim_paired", "class_accuracy")


@dataclass(frozen=True)
class Sampling:
    """One way of drawing samples from a trained variant: `flags` go to `diffusion_lab.sample`."""

    name: str
    label: str
    flags: tuple[str, ...] = ()
    conditional: bool = False


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
    samplings = tuple(
        Sampling(name=s["name"], label=s.get("label", s["name"]), flags=tuple(s.get("flags", ())), conditional=s.get("conditional", False))
        for s in config.get("samplings", [{"name": "default", "label": "unconditional"}])
    )
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


class ExperimentRunner:
    def __init__(self, budget_name: str, configs_dir: Path, output_dir: Path, launcher: list[str], device: str):
        self.budget_name = budget_name
        self.budget = BUDGETS[budget_name]
        self.root = configs_dir.resolve().parent  # the training scripts live next to the configs folder
        self.output_dir = output_dir
        self.launcher = launcher
        self.device = device
        self.figures = output_dir / "figures"
        self.figures.mkdir(parents=True, exist_ok=True)
        # The training scripts import the same diffusion_lab as this runner, whatever is installed.
        package_root = str(Path(__file__).resolve().parents[1])
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}

    def run_dir(self, variant: Variant) -> Path:
        return self.output_dir / "runs" / variant.name

    def row_dir(self, row: str) -> Path:
        return self.output_dir / "rows" / row

    # -- training ----------------------------------------------------------------------------------------------

    def train_steps(self, variant: Variant) -> int:
        return max(1, round(self.budget.train_steps * variant.train_steps_factor))

    def train(self, variant: Variant) -> dict:
        """Train in a subprocess unless already done; returns the record of the training."""
        run_dir = self.run_dir(variant)
        done = run_dir / "experiment_train.json"
        if done.is_file():
            return json.loads(done.read_text())
        budget = self.budget
        command = [*self.launcher, str(self.root / variant.script), *SEEDS_RECIPE, *variant.flags,
                   "--output_dir", str(run_dir), "--seed", str(SEED), "--logger", "none",
                   "--max_train_steps", str(self.train_steps(variant)), "--train_batch_size", str(budget.train_batch_size),
                   "--checkpointing_steps", str(budget.checkpointing_steps), "--checkpoints_total_limit", "1"]
        if budget.max_train_samples is not None:
            command += ["--max_train_samples", str(budget.max_train_samples)]
        if budget.num_inference_steps is not None and not variant.is_cold:
            command += ["--num_inference_steps", str(budget.num_inference_steps)]  # the training's sample grids
        if run_dir.is_dir() and complete_checkpoints(run_dir):
            command += ["--resume_from_checkpoint", "latest"]
        elif run_dir.is_dir():
            command += ["--overwrite_output_dir"]  # an interrupted run without a checkpoint: start afresh
        run_dir.mkdir(parents=True, exist_ok=True)
        print(f"[{variant.name}] training: {shlex.join(command)}", flush=True)
        start = time.perf_counter()
        # Beside the run folder, not in it: a run folder holds only what the trainer writes (it refuses any other).
        log_path = run_dir.with_name(f"{run_dir.name}.train.log")
        with log_path.open("a") as log:
            returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, env=self.env).returncode
        if returncode != 0:
            raise RuntimeError(f"training failed (exit {returncode}): see {log_path}")
        record = {"command": shlex.join(command), "seconds": time.perf_counter() - start,
                  "resumed": "--resume_from_checkpoint" in command, "train_steps": self.train_steps(variant)}
        done.write_text(json.dumps(record, indent=2) + "\n")
        self.plot_losses(variant)
        return record

    def plot_losses(self, variant: Variant) -> None:
        from .evaluation.plot_run import main as plot_run

        plots = self.run_dir(variant) / "plots"
        plot_run([str(self.run_dir(variant)), "--output_dir", str(plots)])
        if (plots / "loss_curves.png").is_file():
            shutil.copyfile(plots / "loss_curves.png", self.figures / f"loss_{variant.name}.png")

    # -- sampling and evaluation -------------------------------------------------------------------------------

    def sampler(self, variant: Variant, sampling: Sampling) -> tuple[str, list[str]]:
        """A readable name of the sampling protocol, and the `diffusion_lab.sample` flags that set its steps."""
        if variant.is_cold:
            mode = "conditional" if sampling.conditional else "unconditional"
            return f"cold, all levels, {sampling.label} ({mode})", []
        config = json.loads((self.run_dir(variant) / "scheduler" / "scheduler_config.json").read_text())
        steps = self.budget.num_inference_steps or config["num_train_timesteps"]
        # The table's protocol is the pipeline's own ancestral sampler; DES keeps its own scheduler anyway.
        scheduler = [] if "noise_scale" in config else ["--scheduler", "ddpm"]
        return f"DDPM ancestral, {steps} steps", [*scheduler, "--num_inference_steps", str(steps)]

    def evaluate(self, variant: Variant, sampling: Sampling, train_record: dict) -> dict:
        """Sample N images, score them; returns the row (cached in row.json)."""
        from .evaluation.evaluate import main as evaluate
        from .sample import main as sample

        row = variant.row_name(sampling)
        row_dir = self.row_dir(row)
        done = row_dir / "row.json"
        if done.is_file():
            return json.loads(done.read_text())
        budget = self.budget
        sampler, step_flags = self.sampler(variant, sampling)
        samples_dir = row_dir / "samples"
        common = [str(self.run_dir(variant)), "--output_dir", str(samples_dir), "--batch_size", str(budget.sample_batch_size),
                  "--seed", str(SEED), "--device", self.device, *step_flags, *sampling.flags]
        print(f"[{row}] sampling: {sampler}", flush=True)
        start = time.perf_counter()
        # --overwrite: an evaluation.json without row.json is left by an attempt that stopped before the row was done.
        evaluate_flags = ["--output", str(row_dir / "evaluation.json"), "--overwrite", "--seed", str(SEED), "--device", self.device]
        if sampling.conditional:
            num_restored = min(budget.num_samples, MAX_CONDITIONAL_SAMPLES)
            restore_test_images(common, num_restored, samples_dir)
            grid = samples_dir / "four_columns.png"
            # The restored test images are left out of the reference, so the distribution metrics see new images.
            evaluate_flags += ["--originals", str(samples_dir / "originals.npz"), "--reference_split", f"test[{num_restored}:]"]
        else:
            # A class-conditional run draws --num_images of each class: N in all, as for the other rows.
            per_class = budget.num_samples // 10 if "--class_conditional" in variant.flags else budget.num_samples
            # --overwrite_output_dir: samples without row.json are left by an attempt that stopped before the row was done.
            sample([*common, "--num_images", str(per_class), "--overwrite_output_dir"])
            grid = samples_dir / "grid.png"
        sample_seconds = time.perf_counter() - start
        shutil.copyfile(grid, self.figures / f"exp_{row}.png")
        print(f"[{row}] evaluating", flush=True)
        start = time.perf_counter()
        metrics = evaluate([str(samples_dir / "samples.npz"), *evaluate_flags])
        eval_seconds = time.perf_counter() - start
        losses = final_losses(self.run_dir(variant) / "metrics.jsonl")
        result = {
            "row": row, "variant": variant.name, "sampling": sampling.label, "description": variant.description,
            "script": variant.script, "flags": shlex.join(variant.flags), "status": "done",
            "train_steps": train_record["train_steps"], "train_batch_size": budget.train_batch_size,
            "train_seconds": round(train_record["seconds"], 1), "sample_seconds": round(sample_seconds, 1),
            "eval_seconds": round(eval_seconds, 1), "num_samples": metrics["num_samples"], "sampler": sampler,
            **{name: metrics.get(name) for name in METRICS}, **losses,
            "real": {name: metrics[f"{name}_real"] for name in METRICS if f"{name}_real" in metrics},
        }
        done.write_text(json.dumps(result, indent=2) + "\n")
        return result

    # -- the whole table ---------------------------------------------------------------------------------------

    def run(self, variants: list[Variant], collect_only: bool = False) -> list[dict]:
        from .plot_schedules import main as plot_schedules

        if not (self.figures / "schedules.png").is_file():
            plot_schedules(["--output", str(self.figures / "schedules.png")])
        rows = []
        for variant in variants:
            reason = (variant.skip_budgets or {}).get(self.budget_name)
            if reason:
                rows += [self.placeholder(variant, s, f"not run at budget {self.budget_name}: {reason}") for s in variant.samplings]
                continue
            if collect_only:
                rows += [self.finished_row(variant, s) for s in variant.samplings]
                continue
            try:
                train_record = self.train(variant)
            except (RuntimeError, ValueError, OSError) as error:
                print(f"[{variant.name}] {error}", file=sys.stderr, flush=True)
                rows += [self.placeholder(variant, s, f"failed: {error}") for s in variant.samplings]
                continue
            for sampling in variant.samplings:
                try:
                    rows.append(self.evaluate(variant, sampling, train_record))
                except (RuntimeError, ValueError, OSError) as error:
                    print(f"[{variant.row_name(sampling)}] {error}", file=sys.stderr, flush=True)
                    rows.append(self.placeholder(variant, sampling, f"failed: {error}"))
                self.write_table(rows, variants)  # after every row, so a long run shows progress
        self.write_table(rows, variants)
        self.plot_loss_overview(variants)
        self.plot_grid_overview(rows)
        return rows

    def run_concurrently(self, variants: list[Variant], processes: int, runner_flags: list[str]) -> None:
        """Train and evaluate `variants` in `processes` runner subprocesses at once, one variant each, longest first;
        their rows land in this runner's folders, for `run(..., collect_only=True)` to tabulate."""
        from concurrent.futures import ThreadPoolExecutor

        from .plot_schedules import main as plot_schedules

        if not (self.figures / "schedules.png").is_file():  # once, before the subprocesses would each draw it
            plot_schedules(["--output", str(self.figures / "schedules.png")])
        runnable = [v for v in variants if not (v.skip_budgets or {}).get(self.budget_name)]
        runnable.sort(key=lambda v: -v.train_steps_factor)  # stable: the configs' order among equals

        def run_one(variant: Variant) -> None:
            log_path = self.output_dir / f"runner_{variant.name}.log"
            command = [sys.executable, "-m", "diffusion_lab.experiments", *runner_flags, "--concurrency", "1", "--only", variant.name]
            with log_path.open("a") as log:
                returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=self.env).returncode
            print(f"[{variant.name}] {'done' if returncode == 0 else f'failed (exit {returncode}): see {log_path}'}", flush=True)

        print(f"running {len(runnable)} variants, {processes} at once", flush=True)
        with ThreadPoolExecutor(processes) as pool:
            list(pool.map(run_one, runnable))

    def concurrency(self, requested: str, variants: list[Variant], max_processes: int) -> int:
        """--concurrency: a number as given, or (auto) measured once by the probe and kept in concurrency.json."""
        if requested != "auto":
            return int(requested)
        record = self.output_dir / "concurrency.json"
        if record.is_file():
            return json.loads(record.read_text())["concurrency"]
        from .concurrency import probe

        models = [v.flags[v.flags.index("--model") + 1] for v in variants if "--model" in v.flags[:-1]]
        model = max(set(models), key=models.count) if models else "cnn"
        result = probe(model, self.budget.train_batch_size, self.device, min(max_processes, len(variants)), env=self.env)
        record.write_text(json.dumps(result, indent=2) + "\n")
        return result["concurrency"]

    def plot_grid_overview(self, rows: list[dict]) -> None:
        """figures/grids.png: every finished row's sample grid (conditional rows: original, degraded, one-step and
        iterative restoration of 8 test images), titled with its row name and digit FD."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from PIL import Image

        done = [row for row in rows if row["status"] == "done" and (self.figures / f"exp_{row['row']}.png").is_file()]
        if not done:
            return
        columns = min(6, len(done))
        lines = math.ceil(len(done) / columns)
        figure, axes = plt.subplots(lines, columns, figsize=(2.3 * columns, 2.6 * lines), squeeze=False)
        for axis in axes.flat:
            axis.axis("off")
        for axis, row in zip(axes.flat, done):
            axis.imshow(Image.open(self.figures / f"exp_{row['row']}.png"), cmap="gray")
            axis.set_title(f"{row['row']}\ndigit FD {_cell(row.get('digit_fd'))}", fontsize=7)
        figure.suptitle(f"budget {self.budget_name}: one grid per row", fontsize=9)
        figure.tight_layout()
        figure.savefig(self.figures / "grids.png", dpi=80)
        plt.close(figure)

    def plot_loss_overview(self, variants: list[Variant]) -> None:
        """figures/losses.png: every trained variant's logged training loss against the step, DDPM and cold apart."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .evaluation.plot_run import read_metrics

        trained = [v for v in variants if (self.run_dir(v) / "experiment_train.json").is_file()]
        if not trained:
            return
        figure, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        for axis, cold, title in ((axes[0], False, "DDPM family: noise-prediction loss"), (axes[1], True, "cold diffusion: restoration loss")):
            for variant in (v for v in trained if v.is_cold == cold):
                losses = read_metrics(self.run_dir(variant))[0].get("loss", {})
                steps = sorted(losses)
                axis.plot(steps, [losses[step] for step in steps], label=variant.name, lw=1.2)
            axis.set(title=title, xlabel="optimizer step", ylabel="training loss (as logged)", yscale="log")
            axis.grid(alpha=0.3)
            if axis.lines:
                axis.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(self.figures / "losses.png", dpi=110)
        plt.close(figure)

    def finished_row(self, variant: Variant, sampling: Sampling) -> dict:
        done = self.row_dir(variant.row_name(sampling)) / "row.json"
        return json.loads(done.read_text()) if done.is_file() else self.placeholder(variant, sampling, "not finished")

    def placeholder(self, variant: Variant, sampling: Sampling, status: str) -> dict:
        return {"row": variant.row_name(sampling), "variant": variant.name, "sampling": sampling.label,
                "description": variant.description, "script": variant.script, "flags": shlex.join(variant.flags), "status": status}

    def write_table(self, rows: list[dict], variants: list[Variant]) -> None:
        expected = sum(len(v.samplings) for v in variants)
        partial = sum(row["status"] == "done" for row in rows) < expected
        with (self.output_dir / "results.csv").open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        (self.output_dir / "results.md").write_text(markdown_table(rows, self.budget_name, self.budget, partial, expected))


def restore_test_images(sample_argv: list[str], num_images: int, output_dir: Path) -> None:
    """Conditional cold diffusion: degrade the first N test images to level T and restore them.

    Writes `samples.npz` (restorations) and `originals.npz` (uint8, N x H x W x C), and `four_columns.png` (the
    seeds' figure for the first 8: original, degraded, one-step and iterative restoration), with the sampling
    options (`--algorithm`, `--noise`, `--num_inference_steps`, `--seed`, `--batch_size`) read by the sample
    command's own parser.
    """
    from .data import image_grid
    from .evaluation.image_sources import load_dataset_images
    from .pipelines.export import load_pipeline
    from .sample import parse_args

    args = parse_args(sample_argv)
    pipeline = load_pipeline(args.pipeline).to(args.device)
    pipeline.set_progress_bar_config(disable=True)
    test_images, _ = load_dataset_images(split="test")  # the shipped MNIST, held out from training
    if num_images > len(test_images):
        raise ValueError(f"{num_images} conditional samples asked for but the test split has {len(test_images)} images: lower N.")
    restored, originals, figure = [], [], None
    for batch_index, start in enumerate(range(0, num_images, args.batch_size)):
        images = test_images[start : min(start + args.batch_size, num_images)].float() / 127.5 - 1
        generator = torch.Generator().manual_seed(args.seed + batch_index)
        output = pipeline(images=images, generator=generator, num_inference_steps=args.num_inference_steps,
                          algorithm=args.algorithm, noise=args.noise, output_type="pt")
        restored.append(output.images.cpu())
        originals.append(output.originals.cpu())
        if figure is None:
            columns = torch.stack([output.originals, output.degraded, output.direct, output.images], dim=1)[:8].cpu()
            figure = image_grid(columns.flatten(0, 1) * 2 - 1, columns=4)
    output_dir.mkdir(parents=True, exist_ok=True)
    figure.save(output_dir / "four_columns.png")
    for name, batches in (("samples", restored), ("originals", originals)):
        images = (torch.cat(batches) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        np.savez_compressed(output_dir / f"{name}.npz", images=images)


def final_losses(metrics_path: Path) -> dict:
    """The last logged per-epoch train and validation loss of a run."""
    losses = {}
    for line in metrics_path.read_text().splitlines():
        record = json.loads(line)
        for name in ("train_loss", "val_loss"):
            if name in record:
                losses[name] = record[name]
    return losses


def _cell(value, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}g}"
    return str(value)


def markdown_table(rows: list[dict], budget_name: str, budget: Budget, partial: bool, expected: int) -> str:
    done = [row for row in rows if row["status"] == "done"]
    real = done[0]["real"] if done else {}
    header = ["row", "sampler", "train steps", "train s", "sample s", "eval s", "N", "digit FD ↓", "digit IS ↑", "confidence ↑",
              "PSNR", "SSIM", "paired PSNR ↑", "paired SSIM ↑", "class accuracy ↑", "train loss", "val loss", "status"]
    lines = [
        f"# Experiment results, budget `{budget_name}`{' (PARTIAL)' if partial else ''}",
        "",
        f"{len(done)} of {expected} rows done. Budget: {json.dumps(asdict(budget))}.",
        f"Hardware: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), torch threads "
        f"{torch.get_num_threads()}, CUDA {'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [row["row"], row.get("sampler"), row.get("train_steps"), row.get("train_seconds"), row.get("sample_seconds"),
                 row.get("eval_seconds"), row.get("num_samples"), *(row.get(name) for name in METRICS),
                 row.get("train_loss"), row.get("val_loss"), row["status"]]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    if real:
        cells = ["real test images (floor)", "", "", "", "", "", done[0]["num_samples"], *(real.get(name) for name in METRICS), "", "", ""]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    lines += ["", "Variants (the script and flags; the runner adds the budget's steps, batch size and data):", ""]
    for variant in dict.fromkeys((row["variant"], row["description"], row["script"], row["flags"]) for row in rows):
        name, description, script, flags = variant
        lines.append(f"- `{name}`: {description}. `{script} {flags}`")
    lines += ["", "Digit FD/IS/confidence: the shipped digit classifier; PSNR/SSIM: each sample against 100 test images "
              "(as the seeds); paired PSNR/SSIM: each conditional restoration against its own original. The last row is "
              "real test images scored in place of the generated ones, at the same N.", ""]
    return "\n".join(lines)


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=tuple(BUDGETS), default="small")
    parser.add_argument("--only", nargs="+", default=None, help="Run only these variants (config file stems).")
    parser.add_argument("--configs_dir", type=Path, default=Path("experiments"))
    parser.add_argument("--output_dir", type=Path, default=None, help="Default: runs/experiments/<budget>.")
    parser.add_argument("--launcher", default="python", help='How to start the training scripts, e.g. "accelerate launch".')
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="For sampling and evaluation.")
    parser.add_argument("--list", action="store_true", help="List the variants and exit.")
    parser.add_argument(
        "--collect", action="store_true",
        help="Only rebuild the table and figures from the rows already finished (e.g. after running disjoint --only "
        "sets in parallel into one --output_dir); nothing is trained or sampled.",
    )
    parser.add_argument(
        "--concurrency", default="auto" if torch.cuda.is_available() else "1",
        help="Variants run at once: a number, or auto (the default on CUDA; 1 elsewhere) to measure how many runs the "
             "device takes before it is busy (see diffusion_lab.concurrency).",
    )
    parser.add_argument("--max_concurrency", type=int, default=8, help="The most variants --concurrency auto tries at once.")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    if args.concurrency != "auto" and not (args.concurrency.isdigit() and int(args.concurrency) >= 1):
        parser.error(f"--concurrency {args.concurrency}: pass a positive number or auto")
    if args.max_concurrency < 1:
        parser.error(f"--max_concurrency {args.max_concurrency}: pass a positive number")
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    variants = load_variants(args.configs_dir, args.only)
    if args.list:
        for variant in variants:
            print(f"{variant.name:24s} {variant.script} {shlex.join(variant.flags)}  ({len(variant.samplings)} sampling(s))")
        return []
    launcher = [sys.executable] if args.launcher == "python" else shlex.split(args.launcher)
    runner = ExperimentRunner(args.budget, args.configs_dir, args.output_dir or Path("runs/experiments") / args.budget, launcher, args.device)
    processes = 1 if args.collect or len(variants) == 1 else runner.concurrency(args.concurrency, variants, args.max_concurrency)
    if processes > 1:
        runner_flags = ["--budget", args.budget, "--configs_dir", str(args.configs_dir.resolve()), "--output_dir",
                        str(runner.output_dir.resolve()), "--launcher", args.launcher, "--device", args.device]
        runner.run_concurrently(variants, processes, runner_flags)
    rows = runner.run(variants, collect_only=args.collect or processes > 1)
    print(f"wrote {runner.output_dir / 'results.md'} and results.csv")
    return rows


if __name__ == "__main__":
    run_command(main)
