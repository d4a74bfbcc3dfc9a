"""The experiment table's outputs: `results.md` / `results.csv`, and the overview figures of all rows."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
from dataclasses import asdict
from pathlib import Path

import torch

from ..run_files import read_metrics, write_text_atomically
from .variants import Budget, Variant

METRICS = ("digit_fd", "digit_is", "digit_confidence", "psnr", "ssim", "psnr_paired", "ssim_paired", "class_accuracy")
# The table's columns, in order; `results.csv` has all of them, `results.md` the readable subset.
COLUMNS = (
    "row", "variant", "sampling", "description", "script", "flags", "status",
    "train_steps", "train_batch_size", "train_seconds", "sample_seconds", "eval_seconds",
    "num_samples", "sampler", *METRICS, "train_loss", "val_loss",
)



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


def write_table(rows: list[dict], variants: list[Variant], output_dir: Path, budget_name: str, budget: Budget) -> None:
    """results.csv (every column) and results.md (the readable ones) in `output_dir`, marked partial until every
    row of `variants` is done."""
    expected = sum(len(v.samplings) for v in variants)
    partial = sum(row["status"] == "done" for row in rows) < expected
    # Atomically: a run stopped at a time budget, or a runner process beside this one, never leaves half a table.
    csv_text = io.StringIO(newline="")
    writer = csv.DictWriter(csv_text, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomically(output_dir / "results.csv", csv_text.getvalue())
    write_text_atomically(output_dir / "results.md", markdown_table(rows, budget_name, budget, partial, expected))


def plot_grid_overview(rows: list[dict], figures: Path, budget_name: str) -> None:
    """`figures`/grids.png: every finished row's sample grid (conditional rows: original, degraded, one-step and
    iterative restoration of 8 test images), titled with its row name and digit FD."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    done = [row for row in rows if row["status"] == "done" and (figures / f"exp_{row['row']}.png").is_file()]
    if not done:
        return
    columns = min(6, len(done))
    lines = math.ceil(len(done) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(2.3 * columns, 2.6 * lines), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, row in zip(axes.flat, done):
        axis.imshow(Image.open(figures / f"exp_{row['row']}.png"), cmap="gray")
        axis.set_title(f"{row['row']}\ndigit FD {_cell(row.get('digit_fd'))}", fontsize=7)
    figure.suptitle(f"budget {budget_name}: one grid per row", fontsize=9)
    figure.tight_layout()
    figure.savefig(figures / "grids.png", dpi=80)
    plt.close(figure)


def plot_loss_overview(runs: list[tuple[Variant, Path]], figures: Path) -> None:
    """`figures`/losses.png: the logged training loss against the step of each (variant, run folder) in `runs`,
    DDPM and cold apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        return
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for axis, cold, title in ((axes[0], False, "DDPM family: noise-prediction loss"), (axes[1], True, "cold diffusion: restoration loss")):
        for variant, run_dir in ((v, d) for v, d in runs if v.is_cold == cold):
            losses = read_metrics(run_dir).series.get("loss", {})
            steps = sorted(losses)
            axis.plot(steps, [losses[step] for step in steps], label=variant.name, lw=1.2)
        axis.set(title=title, xlabel="optimizer step", ylabel="training loss (as logged)", yscale="log")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(figures / "losses.png", dpi=110)
    plt.close(figure)
