"""Time to quality: train a configuration and score its samples at fixed marks of training time.

    python benchmarks/time_to_quality.py --marks 10 20 30 45 60 --output_dir runs/ttq-default
    python benchmarks/time_to_quality.py --marks 5 10 --num_samples 500 --json --output_dir runs/ttq-lr -- --learning_rate 2e-3

Everything after `--` is a train_ddpm.py flag; without any, the run is train_ddpm.py's default recipe. A run on a
constant learning rate trains until its last mark; one whose --lr_scheduler decays (the CPU recipe's cosine), or any
with --own_length, trains for its own length, over which the schedule runs, so that each mark measures the run a user
gets: a run that ends before a mark is scored at its end, and marks past it are dropped. At each mark
(minutes of training time), the run's own sampler (the EMA weights, `--sampler`, `--num_inference_steps`) draws
`--num_samples` images from the same noise, and they are scored with the project's digit metrics against the MNIST
test split, next to the real-vs-real floor at the same N. One draw of 1,000 images moves the digit FD by 6-20 %
(benchmarks/RESULTS.md, section 11): `--draws K` scores K draws from different noise at each mark and reports
their mean and standard deviation, which is what a comparison of two runs needs. The time spent sampling and scoring is not counted as
training time; the run's own per-epoch work (validation, sample grid, pipeline save) is, as for a user. A run that
keeps an autoguidance guide (the CPU recipe) is scored autoguided; --compare_unguided scores the same model without
its guide too, from the same noise (the point's "unguided"), which measures what the guide is worth at every mark.

Writes to <output_dir>/time_to_quality/: curve.json, curve.png (digit FD against minutes, floor and 4x floor
drawn), both rewritten after every mark ("finished" once the last is scored), mark_<minutes>.png (64 samples of
each mark, every (N / 64)-th, so that a class-conditional run's grid shows every class) and mark_<minutes>/, the pipeline scored there (for `diffusion-lab evaluate` with other samplers).
--json prints the curve as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import textwrap
import time
from pathlib import Path

import torch

from diffusion_lab.run_files import write_json_atomically

# A horizon far beyond any mark: the run ends at the last mark, not at a step count.
UNBOUNDED_STEPS = 10**7
# Draw k of a mark samples from the noise of seed --seed + k * DRAW_SEED_STRIDE (sampler_quality.py's seeds 0, 1000, 2000).
DRAW_SEED_STRIDE = 1000


def digit_fd_over_draws(results: list[dict]) -> dict:
    """Each draw's digit FD (`evaluate_images` results), their mean and, with several draws, standard deviation."""
    fd_draws = [result["digit_fd"] for result in results]
    return {"digit_fd": statistics.fmean(fd_draws), "digit_fd_draws": fd_draws,
            "digit_fd_sd": statistics.stdev(fd_draws) if len(fd_draws) > 1 else None}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--marks", type=float, nargs="+", default=[10, 20, 30, 45, 60], help="Minutes of training time at which to score.")
    parser.add_argument("--num_samples", type=int, default=1000, help="N, images scored at each mark.")
    parser.add_argument("--output_dir", required=True, help="The run folder (a new one).")
    parser.add_argument("--draws", type=int, default=1,
                        help="Draws of N images per mark, from the noise of seeds --seed, --seed + 1000, ...; the mark's FD is their mean.")
    parser.add_argument("--compare_unguided", action="store_true",
                        help="An autoguided run: also score each mark's model without its guide, from the same noise.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice).")
    parser.add_argument("--json", action="store_true", help="Print the curve as one JSON object.")
    parser.add_argument(
        "--own_length", action="store_true",
        help="Train for the run's own length (its --num_epochs or --max_train_steps) instead of until the last mark, as a "
             "run whose --lr_scheduler decays always does; a run that ends before a mark is scored at its end, and marks past it are dropped.",
    )
    parser.add_argument("train_args", nargs="*", help="train_ddpm.py flags, after --.")
    args = parser.parse_args(argv)
    if any(mark <= 0 for mark in args.marks) or sorted(args.marks) != args.marks:
        parser.error("--marks must be positive and increasing, e.g. --marks 10 20 30")
    if args.num_samples < 4:
        parser.error("--num_samples must be at least 4")
    if args.draws < 1:
        parser.error("--draws must be at least 1")
    return args


class QualityCurve:
    """The `after_step` hook of the trainer: scores samples whenever training time passes the next mark, and
    rewrites curve.json and curve.png (`report`, its points included) after each, so that a run stopped at a time
    budget keeps every mark it scored."""

    def __init__(self, marks_minutes: list[float], num_samples: int, draws: int, folder: Path, report: dict,
                 compare_unguided: bool = False):
        self.marks = list(marks_minutes)
        self.compare_unguided = compare_unguided
        self.num_samples = num_samples
        self.draws = draws
        self.folder = folder
        self.report = report
        self.points: list[dict] = report["points"]
        self.scoring_seconds = 0.0
        self.start = time.perf_counter()

    def training_seconds(self) -> float:
        return time.perf_counter() - self.start - self.scoring_seconds

    def __call__(self, trainer) -> None:
        run_ends = trainer.global_step >= trainer.max_train_steps
        if not self.marks or (self.training_seconds() < self.marks[0] * 60 and not run_ends):
            return
        from diffusion_lab.evaluation import evaluate_images
        from diffusion_lab.sampling import image_grid

        minutes = round(self.training_seconds() / 60, 3)  # as the curve records them
        # A run with its own length (--own_length) that ends before a mark is scored at its end, labelled by its minutes
        # as recorded (rounding the unrounded minutes could differ: 0.0496 -> 0.0, where 0.050 -> 0.1).
        mark = self.marks.pop(0) if minutes >= self.marks[0] else round(minutes, 1)
        if run_ends:
            self.marks.clear()
        began = time.perf_counter()
        sampling_seconds, results, unguided = 0.0, [], []
        for draw in range(self.draws):
            label = f"samples at {mark:g} min" + (f", draw {draw + 1} of {self.draws}" if self.draws > 1 else "")
            sampling_began = time.perf_counter()
            images = trainer.generate(self.num_samples, label, seed=trainer.args.seed + DRAW_SEED_STRIDE * draw)
            sampling_seconds += time.perf_counter() - sampling_began
            results.append(evaluate_images(images, psnr_ssim=False, seed=0))
            if draw == 0:
                image_grid(images[:: max(1, len(images) // 64)][:64]).save(self.folder / f"mark_{mark:g}.png")
            if self.compare_unguided and trainer.guides is not None:
                images = trainer.generate(self.num_samples, label + ", unguided", seed=trainer.args.seed + DRAW_SEED_STRIDE * draw, guided=False)
                unguided.append(evaluate_images(images, psnr_ssim=False, seed=0))
        trainer.save_pipeline(self.folder / f"mark_{mark:g}")  # to compare samplers on it later (`evaluate`)
        result = {name: statistics.fmean(draw[name] for draw in results) for name in results[0] if name.startswith("digit_")}
        point = {
            "mark_minutes": mark,
            "minutes": minutes,
            "steps": trainer.global_step,
            "images_seen": trainer.global_step * trainer.args.train_batch_size * trainer.args.gradient_accumulation_steps,
            **digit_fd_over_draws(results),
            "floor": result["digit_fd_real"],
            "ratio": result["digit_fd"] / result["digit_fd_real"],
            "digit_is": result["digit_is"],
            "class_fractions": [round(result[f"digit_class_{k}_fraction"], 4) for k in range(10)],
            "sampling_seconds": round(sampling_seconds, 1),
            "num_samples": self.num_samples,
            "run_end": run_ends,
        }
        if unguided:
            point["unguided"] = digit_fd_over_draws(unguided)
        self.points.append(point)
        self.report["finished"] = not self.marks
        write_curve(self.report, self.folder)
        self.scoring_seconds += time.perf_counter() - began
        spread = f" +- {point['digit_fd_sd']:.1f} over {self.draws} draws" if self.draws > 1 else ""
        alone = f"; unguided {point['unguided']['digit_fd']:.1f}" if unguided else ""
        print(f"[time to quality] {minutes:.1f} min, step {point['steps']}: digit FD {point['digit_fd']:.1f}{spread} "
              f"(floor {point['floor']:.1f}, {point['ratio']:.1f}x), IS {point['digit_is']:.2f}{alone}; "
              f"sampled in {sampling_seconds:.0f} s", flush=True)
        if not self.marks:
            trainer.max_train_steps = trainer.global_step  # the last mark ends the run


def cpu_name() -> str:
    """The CPU's model name with its family and model numbers: VMs name different generations alike ("AMD EPYC"),
    and their steps per minute differ by 1.8x (benchmarks/RESULTS.md, section 23)."""
    cpuinfo = Path("/proc/cpuinfo")
    fields = {}
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    generation = f" (family {fields['cpu family']}, model {fields['model']})" if "cpu family" in fields and "model" in fields else ""
    return fields["model name"] + generation


def plot_curves(curves: dict[str, list[dict]], title: str, path: Path) -> None:
    """Digit FD against training minutes, one line per labelled list of points (with their draws' spread where
    there were several), with the first curve's floor and 4x floor (the floor depends only on N)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for label, points in curves.items():
        # Curves scored over several draws (--draws) carry their spread: one standard deviation either side.
        spread = [point.get("digit_fd_sd") or 0 for point in points]
        axes.errorbar([point["minutes"] for point in points], [point["digit_fd"] for point in points], yerr=spread, fmt="o-",
                      capsize=3, label=label)
    points = next(iter(curves.values()))
    minutes, floor = [point["minutes"] for point in points], [point["floor"] for point in points]
    axes.plot(minutes, floor, "k--", label="real vs real (floor)")
    axes.plot(minutes, [4 * value for value in floor], ":", color="grey", label="4x floor")
    axes.set_yscale("log")
    axes.set_xlabel("training time (minutes)")
    axes.set_ylabel("digit FD")
    axes.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=7)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_curve(report: dict, folder: Path) -> None:
    """curve.json, and curve.png once there is a point."""
    write_json_atomically(folder / "curve.json", report)
    if report["points"]:
        curves = {"generated vs real": report["points"]}
        unguided = [{**point, **point["unguided"]} for point in report["points"] if "unguided" in point]
        if unguided:
            curves = {"autoguided": report["points"], "the same models unguided": unguided}
        plot_curves(curves, f"{report['command']} | {report['hardware']}, N = {report['num_samples']}", folder / "curve.png")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusion_lab.commands.train_ddpm import parse_args as parse_train_args
    from diffusion_lab.pipelines.pipeline_cluster_conditional import DEFAULT_CLUSTER_DRAWS
    from diffusion_lab.training.arguments import validate_training_args
    from diffusion_lab.training.ddpm_objective import DDPMObjective
    from diffusion_lab.training.loop import Trainer
    from diffusion_lab.training.recipes import CONSTANT_LR_SCHEDULERS

    train_argv = list(args.train_args)
    # A decaying learning rate runs over the run's own length: stretched over unbounded steps it would stay at its peak.
    own_length = args.own_length or parse_train_args(train_argv).lr_scheduler not in CONSTANT_LR_SCHEDULERS
    if not own_length and "--max_train_steps" not in train_argv:
        train_argv += ["--max_train_steps", str(UNBOUNDED_STEPS)]
    train_args = parse_train_args([*train_argv, "--output_dir", args.output_dir])
    validate_training_args(train_args)
    trainer = Trainer(train_args, DDPMObjective.from_args(train_args), ["train_ddpm.py", *train_argv])
    folder = Path(args.output_dir) / "time_to_quality"
    folder.mkdir(parents=True, exist_ok=True)
    report = {
        "command": "train_ddpm.py " + " ".join(args.train_args),
        "num_samples": args.num_samples,
        "draws": args.draws,
        "sampler": f"{train_args.sampler}, {train_args.num_inference_steps or 'default'} steps",
        "mixed_precision": train_args.mixed_precision,
        "autoguidance": list(trainer.objective.autoguidance) if trainer.objective.autoguidance else None,
        "cluster_draws": DEFAULT_CLUSTER_DRAWS if trainer.objective.num_clusters else None,
        "hardware": f"{cpu_name()}, {torch.get_num_threads()} threads"
                    + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "marks": args.marks,
        "finished": False,  # true once every mark is scored
        "points": [],
    }
    write_curve(report, folder)
    trainer.train(after_step=QualityCurve(args.marks, args.num_samples, args.draws, folder, report, args.compare_unguided))
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
