"""Figures of a training run, from its metrics.jsonl and sample grids.

Writes to RUN_DIR/plots (or --output_dir):
- loss_curves.png: the logged training loss per step, and the train / validation loss per epoch;
- metrics.png: each sample-quality metric per epoch, with its real-vs-real value dashed;
- sample_grids.png: the sample grids saved over the epochs (samples/epoch_*.png), side by side.
"""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from ..run_files import read_metrics  # noqa: E402

# Metrics written by the training loop's evaluation, under this prefix (see Trainer.evaluate_samples).
EVAL_PREFIX = "eval/"
# Columns of grids in sample_grids.png: the first and last epochs and evenly spaced ones between.
MAX_GRIDS = 6


def _by_epoch(values: dict[int, float], epoch_of_step: dict[int, int]) -> tuple[list[int], list[float]]:
    steps = sorted(values)
    return [epoch_of_step[step] for step in steps], [values[step] for step in steps]


def plot_losses(series: dict, path: Path) -> Path | None:
    if "loss" not in series and "train_loss" not in series:
        return None
    figure, axis = plt.subplots(figsize=(7, 4))
    if "loss" in series:
        steps = sorted(series["loss"])
        losses = [series["loss"][s] for s in steps]
        axis.plot(steps, losses, color="tab:blue", alpha=0.35, lw=1, label="training loss (logged steps)")
    for name, color, label in (
        ("train_loss", "tab:blue", "train loss (epoch mean)"),
        ("val_loss", "tab:orange", "validation loss"),
    ):
        if name in series:
            steps = sorted(series[name])
            axis.plot(steps, [series[name][s] for s in steps], "o-", color=color, label=label)
    losses = [v for name in ("loss", "train_loss", "val_loss") for v in series.get(name, {}).values()]
    if losses and min(losses) > 0:
        axis.set_yscale("log")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_metrics(series: dict, epoch_of_step: dict[int, int], path: Path) -> Path | None:
    """One panel per metric against the epoch; the `_real` value (the metric on real images: for a distance, the
    real-vs-real floor) dashed."""
    names = [
        name
        for name in series
        if name.startswith(EVAL_PREFIX) and not name.endswith("_real") and "_class_" not in name
    ]
    class_names = sorted(
        (name for name in series if name.startswith(EVAL_PREFIX + "digit_class_")), key=lambda name: int(name.split("_")[2])
    )
    panels = len(names) + bool(class_names)
    if panels == 0:
        return None
    columns = min(3, panels)
    rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names):
        epochs, values = _by_epoch(series[name], epoch_of_step)
        axis.plot(epochs, values, "o-", label="generated")
        if name + "_real" in series:
            real_epochs, real_values = _by_epoch(series[name + "_real"], epoch_of_step)
            axis.plot(real_epochs, real_values, "--", color="gray", label="real images")
            axis.legend(fontsize=8)
        axis.set_title(name.removeprefix(EVAL_PREFIX))
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    if class_names:
        axis = axes.flat[len(names)]
        steps = sorted(series[class_names[0]])
        fractions = [[series[name][step] for step in steps] for name in class_names]
        image = axis.imshow(fractions, aspect="auto", cmap="viridis", vmin=0)
        axis.set_xticks(range(len(steps)), [str(epoch_of_step[s]) for s in steps], fontsize=7)
        axis.set_yticks(range(len(class_names)), range(len(class_names)))
        axis.set_title("predicted class fraction")
        axis.set_xlabel("epoch")
        axis.set_ylabel("digit")
        figure.colorbar(image, ax=axis)
    for axis in list(axes.flat)[panels:]:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_sample_grids(run_dir: Path, path: Path) -> Path | None:
    grids = sorted((run_dir / "samples").glob("epoch_*.png"))
    if not grids:
        return None
    if len(grids) > MAX_GRIDS:
        grids = [grids[round(i * (len(grids) - 1) / (MAX_GRIDS - 1))] for i in range(MAX_GRIDS)]
    figure, axes = plt.subplots(1, len(grids), figsize=(3 * len(grids), 3.3), squeeze=False)
    for axis, grid in zip(axes.flat, grids):
        image = Image.open(grid)
        axis.imshow(image, cmap="gray" if image.mode == "L" else None, vmin=0, vmax=255)
        axis.set_title(f"epoch {int(grid.stem.removeprefix('epoch_'))}")
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_run(run_dir: str | Path, output_dir: str | Path | None = None) -> list[Path]:
    """Write the figures of a run folder; returns the files written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist: pass the --output_dir of a training run.")
    metrics = read_metrics(run_dir)  # before any folder is made: a refusal leaves nothing behind
    output_dir = Path(output_dir) if output_dir is not None else run_dir / "plots"
    output_dir.mkdir(parents=True, exist_ok=True)
    series, epoch_of_step = metrics.series, metrics.epoch_of_step
    written = [
        plot_losses(series, output_dir / "loss_curves.png"),
        plot_metrics(series, epoch_of_step, output_dir / "metrics.png"),
        plot_sample_grids(run_dir, output_dir / "sample_grids.png"),
    ]
    return [path for path in written if path is not None]
