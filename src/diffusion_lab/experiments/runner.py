"""The experiment runner: trains each variant (a `diffusion-lab train-ddpm|train-cold` subprocess), samples and
scores it through the library (sampling, evaluation), and keeps the table up to date.

Resume-safe: a finished training (`<run>/experiment_train.json`) or evaluation (`<row>/row.json`) is not redone;
an interrupted training continues from its latest checkpoint. Several variants can run at once in runner
subprocesses of their own (`run_concurrently`), as many as `concurrency` chose.
"""

from __future__ import annotations

import functools
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..evaluation.digit_classifier import DigitClassifier
from ..evaluation.dinov2 import DEFAULT_DINOV2, load_dinov2
from ..evaluation.image_evaluation import evaluate_images, write_result
from ..evaluation.image_sources import load_dataset_images, load_npz_images
from ..evaluation.plot_run import plot_run
from ..evaluation.plot_schedules import plot_schedules
from ..run_files import read_metrics, write_json_atomically
from ..sampling import is_class_conditional, labels_for_samples, open_pipeline, restore, use_sampler, write_samples
from ..training.checkpoints import complete_checkpoints
from .table import METRICS, plot_grid_overview, plot_loss_overview, write_table
from .variants import (
    BUDGETS,
    MAX_CONDITIONAL_SAMPLES,
    SEED,
    SEEDS_RECIPE,
    TRAINING_COMMANDS,
    Sampling,
    Variant,
)


class ExperimentRunner:
    def __init__(self, budget_name: str, output_dir: Path, launcher: list[str], device: str):
        self.budget_name = budget_name
        self.budget = BUDGETS[budget_name]
        self.output_dir = output_dir
        self.launcher = launcher  # how a training starts, e.g. [python] or [accelerate, launch]
        self.device = device
        self.figures = output_dir / "figures"
        self.figures.mkdir(parents=True, exist_ok=True)

    # What every row is scored with, loaded once per runner.

    @functools.cached_property
    def test_images(self) -> torch.Tensor:
        """The shipped MNIST's test split (uint8), held out from training: restored by conditional rows, the
        reference of every row."""
        return load_dataset_images(split="test")[0]

    @functools.cached_property
    def classifier(self) -> DigitClassifier:
        return DigitClassifier.from_file()

    @functools.cached_property
    def dinov2(self) -> torch.nn.Module | str:
        """The DINOv2 model where its weights are local, else its name (scoring then notes why FD-DINOv2 is skipped)."""
        model, _ = load_dinov2(DEFAULT_DINOV2)
        return DEFAULT_DINOV2 if model is None else model

    def draw_schedules(self) -> None:
        """figures/schedules.png, once."""
        if not (self.figures / "schedules.png").is_file():
            plot_schedules(self.figures / "schedules.png")

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
        command = [*self.launcher, "-m", "diffusion_lab", TRAINING_COMMANDS[variant.script], *SEEDS_RECIPE[variant.script], *variant.flags,
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
            returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
        if returncode != 0:
            raise RuntimeError(f"training failed (exit {returncode}): see {log_path}")
        record = {"command": shlex.join(command), "seconds": time.perf_counter() - start,
                  "resumed": "--resume_from_checkpoint" in command, "train_steps": self.train_steps(variant)}
        write_json_atomically(done, record)
        self.plot_losses(variant)
        return record

    def plot_losses(self, variant: Variant) -> None:
        plots = self.run_dir(variant) / "plots"
        plot_run(self.run_dir(variant), plots)
        if (plots / "loss_curves.png").is_file():
            shutil.copyfile(plots / "loss_curves.png", self.figures / f"loss_{variant.name}.png")

    # -- sampling and evaluation -------------------------------------------------------------------------------

    def sampler(self, variant: Variant) -> tuple[str, int | None]:
        """A readable name of the sampling protocol, and its number of steps (None: every level of a cold model)."""
        if variant.is_cold:
            return "cold, all levels", None
        config = json.loads((self.run_dir(variant) / "scheduler" / "scheduler_config.json").read_text())
        steps = self.budget.num_inference_steps or config["num_train_timesteps"]
        # The table's protocol is the pipeline's own ancestral sampler (DES keeps its own scheduler anyway).
        return f"DDPM ancestral, {steps} steps", steps

    def evaluate(self, variant: Variant, sampling: Sampling, train_record: dict) -> dict:
        """Sample N images, score them; returns the row (cached in row.json)."""
        row = variant.row_name(sampling)
        row_dir = self.row_dir(row)
        done = row_dir / "row.json"
        if done.is_file():
            return json.loads(done.read_text())
        budget = self.budget
        sampler, steps = self.sampler(variant)
        if variant.is_cold:
            sampler += f", {sampling.label} ({'conditional' if sampling.conditional else 'unconditional'})"
        print(f"[{row}] sampling: {sampler}", flush=True)
        start = time.perf_counter()
        pipeline = open_pipeline(str(self.run_dir(variant)), device=self.device)
        reference, labels = self.test_images, None
        samples_dir = row_dir / "samples"
        # An attempt that stopped before row.json was written leaves samples: they are replaced.
        if sampling.conditional:
            num_restored = min(budget.num_samples, MAX_CONDITIONAL_SAMPLES)
            originals = reference[:num_restored]
            restored = restore(pipeline, originals, budget.sample_batch_size, SEED, steps, **sampling.pipeline_options())
            samples_dir.mkdir(parents=True, exist_ok=True)
            restored.figure.save(samples_dir / "four_columns.png")
            for name, images in (("samples", restored.images), ("originals", originals)):
                np.savez_compressed(samples_dir / f"{name}.npz", images=images.permute(0, 2, 3, 1).numpy())
            images, grid = restored.images, samples_dir / "four_columns.png"
            # The restored test images are left out of the reference, so the distribution metrics see new images.
            reference = reference[num_restored:]
        else:
            # A class-conditional model draws N/K images of each of its K classes: N in all, as for the other rows.
            if is_class_conditional(pipeline):
                labels = labels_for_samples(pipeline, None, budget.num_samples)
            per_class = None if labels is None else len(labels) // len(set(labels))
            steps = use_sampler(pipeline, "ddpm", steps)
            write_samples(pipeline, samples_dir, len(labels) if labels else budget.num_samples, budget.sample_batch_size, SEED,
                          steps, labels, per_class, **sampling.pipeline_options())
            images, originals, grid = load_npz_images(samples_dir / "samples.npz"), None, samples_dir / "grid.png"
        sample_seconds = time.perf_counter() - start
        shutil.copyfile(grid, self.figures / f"exp_{row}.png")
        print(f"[{row}] evaluating", flush=True)
        start = time.perf_counter()
        metrics = evaluate_images(images, reference, device=self.device, images_range="uint8", originals=originals,
                                  originals_range="uint8", reference_range="uint8", labels=None if labels is None else torch.tensor(labels),
                                  classifier=self.classifier, seed=SEED, dinov2=self.dinov2)
        write_result(metrics, row_dir / "evaluation.json")
        eval_seconds = time.perf_counter() - start
        losses = read_metrics(self.run_dir(variant))
        result = {
            **self.placeholder(variant, sampling, "done"),
            "train_steps": train_record["train_steps"], "train_batch_size": budget.train_batch_size,
            "train_seconds": round(train_record["seconds"], 1), "sample_seconds": round(sample_seconds, 1),
            "eval_seconds": round(eval_seconds, 1), "num_samples": metrics["num_samples"], "sampler": sampler,
            **{name: metrics.get(name) for name in METRICS},
            **{name: losses.last(name) for name in ("train_loss", "val_loss") if losses.last(name) is not None},
            "real": {name: metrics[f"{name}_real"] for name in METRICS if f"{name}_real" in metrics},
        }
        write_json_atomically(done, result)
        return result

    # -- the whole table ---------------------------------------------------------------------------------------

    def run(self, variants: list[Variant], collect_only: bool = False) -> list[dict]:
        self.draw_schedules()
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
                write_table(rows, variants, self.output_dir, self.budget_name, self.budget)  # after every row, so a long run shows progress
        write_table(rows, variants, self.output_dir, self.budget_name, self.budget)
        trained = [(v, self.run_dir(v)) for v in variants if (self.run_dir(v) / "experiment_train.json").is_file()]
        plot_loss_overview(trained, self.figures)
        plot_grid_overview(rows, self.figures, self.budget_name)
        return rows

    def run_concurrently(self, variants: list[Variant], processes: int, runner_flags: list[str]) -> None:
        """Train and evaluate `variants` in `processes` runner subprocesses at once, one variant each, longest first;
        their rows land in this runner's folders, and the table of the rows finished so far is rewritten as each
        variant ends (`run(..., collect_only=True)`), so that a run stopped at a time budget shows them."""
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self.draw_schedules()  # before the subprocesses would each draw it
        runnable = [v for v in variants if not (v.skip_budgets or {}).get(self.budget_name)]
        runnable.sort(key=lambda v: -v.train_steps_factor)  # stable: the configs' order among equals

        def run_one(variant: Variant) -> None:
            log_path = self.output_dir / f"runner_{variant.name}.log"
            command = [sys.executable, "-m", "diffusion_lab", "experiments", *runner_flags, "--concurrency", "1", "--only", variant.name]
            with log_path.open("a") as log:
                returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
            print(f"[{variant.name}] {'done' if returncode == 0 else f'failed (exit {returncode}): see {log_path}'}", flush=True)
            with tabulating:  # one thread at a time: the table's files and pyplot
                self.run(variants, collect_only=True)

        tabulating = threading.Lock()

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
        result = probe(model, self.budget.train_batch_size, self.device, min(max_processes, len(variants)))
        write_json_atomically(record, result)
        return result["concurrency"]

    def finished_row(self, variant: Variant, sampling: Sampling) -> dict:
        done = self.row_dir(variant.row_name(sampling)) / "row.json"
        return json.loads(done.read_text()) if done.is_file() else self.placeholder(variant, sampling, "not finished")

    def placeholder(self, variant: Variant, sampling: Sampling, status: str) -> dict:
        return {"row": variant.row_name(sampling), "variant": variant.name, "sampling": sampling.label,
                "description": variant.description, "script": variant.script, "flags": shlex.join(variant.flags), "status": status}
