"""Training throughput: our trainer against the bare model loop and diffusers' example data path.

    python benchmarks/bench_train.py                              # cnn and unet, batch 128, shipped MNIST
    python benchmarks/bench_train.py --models cnn --rounds 2 --steps 1 --json
    python benchmarks/bench_train.py --mixed_precision bf16       # the same comparison under bf16 autocast

Three setups train the same model (same architecture, batch, image size and model-level options) in one process:
  (a) trainer   the `TrainingStep` of diffusion_lab.training.step as train_ddpm.py builds it (decoded-image
                cache, DDPM loss, clipping, optimizer, LR schedule, EMA with --use_ema) plus the loop's logging
                (one host sync and one metrics.jsonl/TensorBoard record every --logging_steps steps);
  (b) bare      random tensors already on the device: forward, MSE, backward, Adam step (fused on CUDA, as in (a)),
                with (a)'s model options (precision, compile and its mode, channels-last). The limit for the model;
  (c) example   diffusers' train_unconditional.py way: the `datasets` images decoded per item through PIL
                transforms in a shuffling DataLoader (benchmarks/diffusers_example_data.py), then that script's
                step (add_noise, clipping, AdamW, LR schedule, EMA, `loss.item()` and a tracker log every step).
                It converts MNIST to RGB; the first channel feeds the same 1-channel model, so (c) is charged for
                its data path only, not for a wider first convolution. --example_fp32 keeps (c) in full precision
                (the example's default) while (a) and (b) run --mixed_precision bf16.
The setups run interleaved (a, b, c, a, b, c, ...) after a warm-up, so that load from other processes on a shared
machine hits all three alike; figures are medians over rounds, ratios the median of the per-round ratios. On CUDA
each timing waits for the device, and the peak memory of each setup is reported. The first step (compilation
included under --torch_compile) is timed apart, before the warm-up. --output is rewritten after every first step and
every round ("rounds_done" per model, "finished" at the end), so a run cut at a time budget keeps the compile times
and the rounds it finished.

    python benchmarks/bench_train.py --models cnn --rounds 1 --steps 1 --warmup 1 --batch_size 8 --json   # tiny, CPU
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diffusers_example_data import example_dataloader  # noqa: E402

from diffusion_lab.run_files import write_json_atomically  # noqa: E402
from diffusion_lab.training.arguments import COMPILE_MODES, CUDA_GRAPH_MODES  # noqa: E402
from diffusion_lab.training.precision import auto_mixed_precision  # noqa: E402

SETUPS = {"a": "trainer", "b": "bare", "c": "example"}
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["cnn", "unet"], help="--model names of the trainer.")
    parser.add_argument("--setups", nargs="+", choices=tuple(SETUPS), default=list(SETUPS))
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="Optimizer steps per setup in each round.")
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds (a, b, c) after the warm-up.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps per setup before the rounds.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice).")
    parser.add_argument("--use_ema", action="store_true", help="EMA in (a) and (c), as --use_ema does in both trainers.")
    parser.add_argument("--random_flip", action="store_true", help="Random horizontal flips in (a) and (c).")
    parser.add_argument("--mixed_precision", choices=("auto", "no", "bf16"), default="no",
                        help="Autocast for all three setups; auto: the trainer's choice (bf16 where native).")
    parser.add_argument("--torch_compile", action="store_true", help="torch.compile the model in all three setups.")
    parser.add_argument("--torch_compile_mode", choices=COMPILE_MODES, default="default", help="Its mode, in all three setups.")
    parser.add_argument("--channels_last", action="store_true", help="Channels-last weights in (a) and (b).")
    parser.add_argument("--cuda_graph", action="store_true", help="(a) with the trainer's --cuda_graph: the whole step replayed as one CUDA graph.")
    parser.add_argument("--data_on_device", action=argparse.BooleanOptionalAction, default=None,
                        help="(a)'s --data_on_device (default: the trainer's auto, on for CUDA).")
    parser.add_argument("--example_fp32", action="store_true",
                        help="Run (c) in fp32, the example's default, even under --mixed_precision bf16.")
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers of (c) (the example's default is 0).")
    parser.add_argument("--dataset", default=None, help="Dataset folder (default: the shipped MNIST).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of the table.")
    parser.add_argument("--output", type=Path, default=None, help="Also write the JSON report to this file.")
    return parser.parse_args(argv)


def _autocast(mixed_precision: str):
    return torch.autocast(DEVICE.type, dtype=torch.bfloat16) if mixed_precision == "bf16" else contextlib.nullcontext()


def _synchronize() -> None:
    """Wait for the device, so that a timing covers the work it launched."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def trainer_setup(model_name: str, args, workdir: Path):
    """(a): the real Trainer on the shipped MNIST (or --dataset).

    Returns run(steps) -> seconds, fetch(batches) -> seconds (data only) and the data's (channels, resolution).
    """
    from diffusion_lab.training.arguments import add_training_args
    from diffusion_lab.training.ddpm_objective import DDPMObjective, add_ddpm_args
    from diffusion_lab.training.loop import Trainer

    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_training_args(parser)
    add_ddpm_args(parser)
    argv = ["--model", model_name, "--output_dir", str(workdir / f"trainer-{model_name}"),
            "--train_batch_size", str(args.batch_size), "--mixed_precision", args.mixed_precision]
    argv += ["--dataset_name", args.dataset] if args.dataset else []
    argv += ["--cuda_graph"] * args.cuda_graph + ["--use_ema"] * args.use_ema + ["--random_flip"] * args.random_flip + ["--channels_last"] * args.channels_last
    argv += ["--torch_compile", "--torch_compile_mode", args.torch_compile_mode] if args.torch_compile else []
    argv += [] if args.data_on_device is None else ["--data_on_device" if args.data_on_device else "--no-data_on_device"]
    trainer_args = parser.parse_args(argv)
    trainer = Trainer(trainer_args, DDPMObjective.from_args(trainer_args), ["train_ddpm.py", *argv])
    window_loss = torch.zeros((), device=DEVICE)

    def fetch(batches: int) -> float:
        start = time.perf_counter()
        for micro_batch in range(batches):
            trainer.step.batch(trainer.step.indices(micro_batch))
        _synchronize()
        return time.perf_counter() - start

    def run(steps: int) -> float:
        nonlocal window_loss
        start = time.perf_counter()
        for _ in range(steps):
            window_loss = window_loss + trainer.step(trainer.global_step)[0]
            trainer.global_step += 1
            if trainer.global_step % trainer_args.logging_steps == 0:  # what Trainer.train does between steps
                loss = trainer.accelerator.reduce(window_loss, reduction="mean").item() / trainer_args.logging_steps
                trainer.metrics.log({"loss": loss, "lr": trainer.lr_scheduler.get_last_lr()[0]}, trainer.global_step)
                window_loss = torch.zeros((), device=DEVICE)
        _synchronize()
        return time.perf_counter() - start

    shape = (trainer.train_data.channels, trainer.train_data.images.shape[-1])
    return run, fetch, shape


def _build(model_name: str, channels: int, resolution: int, args, channels_last: bool = False):
    from diffusion_lab.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name, resolution, channels, 1000)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model, mode=args.torch_compile_mode) if args.torch_compile else model


def bare_setup(model_name: str, args, channels: int, resolution: int):
    """(b): forward, loss, backward, optimizer step on tensors already on the device; no data to fetch."""
    model = _build(model_name, channels, resolution, args, args.channels_last).to(DEVICE)
    cuda = DEVICE.type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=cuda or None, foreach=not cuda or None)
    generator = torch.Generator().manual_seed(0)
    noisy = torch.randn(args.batch_size, channels, resolution, resolution, generator=generator).to(DEVICE)
    noise = torch.randn(noisy.shape, generator=generator).to(DEVICE)
    timesteps = torch.randint(0, 1000, (args.batch_size,), generator=generator).to(DEVICE)

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            if args.torch_compile and args.torch_compile_mode in CUDA_GRAPH_MODES:
                torch.compiler.cudagraph_mark_step_begin()
            with _autocast(args.mixed_precision):
                prediction = model(noisy, timesteps).sample
            loss = F.mse_loss(prediction.float(), noise)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        _synchronize()
        return time.perf_counter() - start

    return run, lambda batches: 0.0


def example_setup(model_name: str, args, channels: int, resolution: int, workdir: Path):
    """(c): diffusers' example data path and step, feeding the same model; returns run and fetch like (a)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    from diffusion_lab.data import SHIPPED_MNIST

    accelerator = Accelerator(
        mixed_precision=args.mixed_precision, log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(workdir / f"example-{model_name}")),
    )
    accelerator.init_trackers("train_unconditional")
    model = _build(model_name, channels, resolution, args)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    # The example's optimizer defaults: AdamW, lr 1e-4, betas (0.95, 0.999), weight decay 1e-6, eps 1e-8.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    loader = example_dataloader(args.dataset or str(SHIPPED_MNIST), args.batch_size, resolution,
                                center_crop=True, random_flip=args.random_flip, num_workers=args.num_workers)
    lr_scheduler = get_scheduler("cosine", optimizer=optimizer, num_warmup_steps=500, num_training_steps=100 * len(loader))
    if args.example_fp32 and args.mixed_precision != "no":
        # The process-wide Accelerate state is bf16 (shared with (a)). On one CPU process prepare(model) would only
        # add bf16 autocast, so leaving the model unprepared is exactly the example under mixed_precision "no".
        optimizer, loader, lr_scheduler = accelerator.prepare(optimizer, loader, lr_scheduler)
    else:
        model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4) if args.use_ema else None
    batches = iter(loader)
    global_step = 0

    def next_batch():
        nonlocal batches
        try:
            return next(batches)
        except StopIteration:
            batches = iter(loader)
            return next(batches)

    def fetch(batches: int) -> float:
        start = time.perf_counter()
        for _ in range(batches):
            next_batch()
        return time.perf_counter() - start

    def run(steps: int) -> float:
        nonlocal global_step
        start = time.perf_counter()
        for _ in range(steps):
            clean = next_batch()["input"][:, :channels]
            noise = torch.randn(clean.shape, dtype=clean.dtype, device=clean.device)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (clean.shape[0],), device=clean.device)
            noisy = noise_scheduler.add_noise(clean, noise, timesteps)
            with accelerator.accumulate(model):
                prediction = model(noisy, timesteps).sample
                loss = F.mse_loss(prediction.float(), noise.float())
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients and ema is not None:
                ema.step(model.parameters())
            global_step += 1
            logs = {"loss": loss.detach().item(), "lr": lr_scheduler.get_last_lr()[0], "step": global_step}
            accelerator.log(logs, step=global_step)
        _synchronize()
        return time.perf_counter() - start

    return run, fetch


def _median_ratio(numerators, denominators):
    return statistics.median(n / d for n, d in zip(numerators, denominators))


def summarize(first_step_s: dict, seconds: dict, data_seconds: dict, peak_memory: dict, batch_size: int) -> dict:
    """One model's result from what is measured so far: each setup's first step (compilation included), and the
    medians over the rounds done (none yet: the first step only)."""
    rounds_done = min(len(per_step) for per_step in seconds.values())
    result = {"rounds_done": rounds_done, "setups": {}}
    for key, first in first_step_s.items():
        result["setups"][key] = {"name": SETUPS[key], "first_step_s": round(first, 2)}
        if not rounds_done:
            continue
        per_step = seconds[key][:rounds_done]
        ms = statistics.median(per_step) * 1000
        result["setups"][key].update({
            "ms_per_step": round(ms, 3), "images_per_s": round(batch_size * 1000 / ms, 1),
            "data_ms_per_batch": round(statistics.median(data_seconds[key][:rounds_done]) * 1000, 2),
            "ms_per_step_rounds": [round(s * 1000, 1) for s in per_step],
            "peak_gpu_memory_mb": round(peak_memory[key] / 2**20, 1) if DEVICE.type == "cuda" else None,
        })
    # Throughput ratios, paired round by round: (a)/(b) = t_b / t_a.
    for numerator, denominator in (("a", "b"), ("a", "c")):
        if rounds_done and numerator in seconds and denominator in seconds:
            result[f"{numerator}/{denominator}"] = round(
                _median_ratio(seconds[denominator][:rounds_done], seconds[numerator][:rounds_done]), 3)
    return result


def bench_model(model_name: str, args, workdir: Path, publish) -> dict:
    """Build the setups, time each one's first step (compilation, under --torch_compile), warm up, then time
    interleaved rounds. `publish(result so far)` is called after every first step and every round, so that a run
    stopped at its time budget keeps the compile times and the rounds it finished."""
    setups, first_step_s = {}, {}
    channels, resolution = 1, 28
    if "a" in args.setups:
        *setups["a"], (channels, resolution) = trainer_setup(model_name, args, workdir)
    if "b" in args.setups:
        setups["b"] = bare_setup(model_name, args, channels, resolution)
    if "c" in args.setups:
        setups["c"] = example_setup(model_name, args, channels, resolution, workdir)
    seconds = {key: [] for key in setups}
    data_seconds = {key: [] for key in setups}
    peak_memory = {key: 0 for key in setups}
    for key, (run, _) in setups.items():
        first_step_s[key] = run(1)
        publish(summarize(first_step_s, seconds, data_seconds, peak_memory, args.batch_size))
    for run, _ in setups.values():
        if args.warmup > 1:
            run(args.warmup - 1)
    for _ in range(args.rounds):
        for key, (run, fetch) in setups.items():
            if DEVICE.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            seconds[key].append(run(args.steps) / args.steps)
            if DEVICE.type == "cuda":
                peak_memory[key] = max(peak_memory[key], torch.cuda.max_memory_allocated())
            data_seconds[key].append(fetch(args.steps) / args.steps)
        publish(summarize(first_step_s, seconds, data_seconds, peak_memory, args.batch_size))
    return summarize(first_step_s, seconds, data_seconds, peak_memory, args.batch_size)


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(), "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def main(argv=None):
    args = parse_args(argv)
    if args.mixed_precision == "auto":
        args.mixed_precision = auto_mixed_precision(use_cpu=DEVICE.type == "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    report = {"machine": machine(), "config": {k: v for k, v in vars(args).items() if k not in ("json", "output")},
              "loadavg_start": [round(x, 2) for x in os.getloadavg()], "finished": False, "models": {}}

    def publish(model_name: str, result: dict) -> None:
        report["models"][model_name] = result
        if args.output:  # as it goes: a run stopped at its time budget keeps what it measured
            write_json_atomically(args.output, report)

    with tempfile.TemporaryDirectory(prefix="bench_train-") as workdir:
        for model_name in args.models:
            bench_model(model_name, args, Path(workdir), functools.partial(publish, model_name))
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["finished"] = True
    if args.output:
        write_json_atomically(args.output, report)
    if args.json:
        print(json.dumps(report))
        return
    print(f"batch {args.batch_size}, {args.rounds} rounds x {args.steps} steps, threads {torch.get_num_threads()}, "
          f"mixed_precision {args.mixed_precision}{' ((c) fp32)' * args.example_fp32}, compile {args.torch_compile and args.torch_compile_mode}, "
          f"channels_last {args.channels_last}, EMA {args.use_ema}, device {report['machine']['gpu'] or 'cpu'}; "
          f"load average {report['loadavg_start']} -> {report['loadavg_end']}")
    print(f"{'model':6s} {'setup':11s} {'ms/step':>9s} {'images/s':>9s} {'data ms/batch':>13s} {'1st step s':>10s} {'GPU MB':>7s}")
    for model_name, result in report["models"].items():
        for key, setup in result["setups"].items():
            memory = "" if setup["peak_gpu_memory_mb"] is None else f"{setup['peak_gpu_memory_mb']:7.0f}"
            print(f"{model_name:6s} ({key}) {setup['name']:7s} {setup['ms_per_step']:9.1f} {setup['images_per_s']:9.1f} "
                  f"{setup['data_ms_per_batch']:13.2f} {setup['first_step_s']:10.2f} {memory}")
        ratios = "   ".join(f"{name} = {value:.2f}" for name, value in result.items() if "/" in name)
        print(f"{model_name:6s} ratios (throughput): {ratios}")


if __name__ == "__main__":
    main()
