"""Sampling throughput (images/s) and peak memory of the samplers, for the coursework CNN and the MNIST UNet.

    python benchmarks/bench_sample.py                         # both models, every sampler, batch 64
    python benchmarks/bench_sample.py --models cnn --samplers ddim-50 dpmsolver-20 --json

Samplers: DDPM with all 1,000 steps, DDIM at 50 and 100 steps, DPM-Solver++ at 20 (the schedulers
`diffusion-lab sample --scheduler ...` swaps in), and cold diffusion restoring row-averaged images over
its 28 levels (when diffusion_lab has ColdDiffusionPipeline). Weights are untrained: speed does not depend on them.
DDPM-1000 runs a smaller batch (--ddpm_batch_size) so that the whole script takes minutes on a CPU; images/s is
per image either way (on a CPU the cost of a batch grows linearly with its size).

Each (model, sampler, compile mode) runs in a fresh process, so that peak memory is its own: on a CPU the growth of
the resident set's high-water mark (getrusage ru_maxrss) from after the warm-up to the end of the run, on CUDA
torch.cuda.max_memory_allocated. --torch_compile off default reduce-overhead measures each sampler uncompiled and
with the model torch.compiled in each mode (every uncompiled row first); the warm-up (two sampler steps at the
measured batch size, which is when compilation happens) is timed apart as warmup_seconds. --output is rewritten
after every row ("finished" at the end), so a run cut at a time budget keeps the rows it measured.

    python benchmarks/bench_sample.py --models cnn --batch_size 2 --ddpm_batch_size 1 --json     # tiny, CPU
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from diffusion_lab.run_files import write_json_atomically
from diffusion_lab.training.arguments import COMPILE_MODES

SAMPLERS = {  # name: (scheduler for diffusion_lab.sampling.swap_scheduler, inference steps)
    "ddpm-1000": ("ddpm", 1000),
    "ddim-50": ("ddim", 50),
    "ddim-100": ("ddim", 100),
    "dpmsolver-20": ("dpmsolver", 20),
    "dpmsolver-sde-20": ("dpmsolver-sde", 20),
    "cold-28": ("cold", None),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["cnn", "unet"])
    parser.add_argument("--samplers", nargs="+", choices=tuple(SAMPLERS), default=list(SAMPLERS))
    parser.add_argument("--batch_size", type=int, default=64, help="Images per run (all samplers but DDPM-1000).")
    parser.add_argument("--ddpm_batch_size", type=int, default=8, help="Images per DDPM-1000 run.")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in each worker.")
    parser.add_argument("--mixed_precision", choices=("no", "bf16"), default="no", help="Autocast the model's forward.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--torch_compile", nargs="+", choices=("off", *COMPILE_MODES), default=["off"],
                        help="Compile settings to measure each sampler under: off (eager) and/or torch.compile modes.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of the table.")
    parser.add_argument("--output", type=Path, default=None, help="Also write the JSON report to this file, after every result.")
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "SAMPLER", "COMPILE"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def cold_pipeline_class():
    """ColdDiffusionPipeline and the row-averaging degradation, or None where this checkout lacks them."""
    try:
        from diffusion_lab.degradations import RowColumnAveraging
        from diffusion_lab.pipelines import ColdDiffusionPipeline
    except ImportError:
        return None
    return ColdDiffusionPipeline, RowColumnAveraging


def _max_rss_bytes() -> int:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def build_sampler(model_name: str, sampler: str, device: str, compile_mode: str = "off"):
    """A function (batch_size, generator, steps=the sampler's) -> images for one model and sampler."""
    from diffusers import DDPMPipeline, DDPMScheduler

    from diffusion_lab.models import build_model
    from diffusion_lab.sampling import swap_scheduler

    torch.manual_seed(0)
    model = build_model(model_name, 28, 1, 1000).to(device).eval()
    if compile_mode != "off":
        model.compile(mode=compile_mode)  # in place: the pipeline still sees the model's own class and config
    scheduler_name, sampler_steps = SAMPLERS[sampler]
    if scheduler_name == "cold":
        ColdDiffusionPipeline, RowColumnAveraging = cold_pipeline_class()
        pipeline = ColdDiffusionPipeline(unet=model, degradation=RowColumnAveraging(sample_size=28, orientation="rows"))
        pipeline.set_progress_bar_config(disable=True)
        return lambda batch_size, generator, steps=sampler_steps: pipeline(
            images=torch.rand(batch_size, 1, 28, 28, generator=generator) * 2 - 1, num_inference_steps=steps, output_type="pt").images
    pipeline = DDPMPipeline(unet=model, scheduler=DDPMScheduler(num_train_timesteps=1000))
    swap_scheduler(pipeline, scheduler_name)
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    return lambda batch_size, generator, steps=sampler_steps: pipeline(
        batch_size=batch_size, generator=generator, num_inference_steps=steps, output_type="pt").images


def worker(args) -> dict:
    """Time one (model, sampler) in this process; called through a subprocess by main."""
    import contextlib

    model_name, sampler, compile_mode = args.worker
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch_size = args.ddpm_batch_size if sampler == "ddpm-1000" else args.batch_size
    sample = build_sampler(model_name, sampler, args.device, compile_mode)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.mixed_precision == "bf16"
                else contextlib.nullcontext())
    with autocast:
        # Warm-up at the measured batch size (compilation, allocator, kernels, lazy imports), timed apart.
        start = time.perf_counter()
        sample(batch_size, torch.Generator().manual_seed(0), steps=2)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        warmup_seconds = time.perf_counter() - start
        rss_before = _max_rss_bytes()
        start = time.perf_counter()
        images = sample(batch_size, torch.Generator().manual_seed(1))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    if not torch.isfinite(images).all():
        raise RuntimeError(f"{sampler} on {model_name} produced non-finite images")
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else _max_rss_bytes() - rss_before
    return {"model": model_name, "sampler": sampler, "compile": compile_mode, "batch_size": batch_size,
            "warmup_seconds": round(warmup_seconds, 2), "seconds": round(seconds, 2),
            "images_per_s": round(batch_size / seconds, 2), "peak_memory_mb": round(peak / 2**20, 1),
            "memory_measure": "cuda max_memory_allocated" if device.type == "cuda" else "maxrss growth",
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "torch": torch.__version__, "device": args.device},
              "config": {k: v for k, v in vars(args).items() if k not in ("json", "worker", "output")},
              "loadavg_start": [round(x, 2) for x in os.getloadavg()], "finished": False, "results": [], "gaps": []}
    passthrough = ["--batch_size", str(args.batch_size), "--ddpm_batch_size", str(args.ddpm_batch_size),
                   "--mixed_precision", args.mixed_precision, "--device", args.device]
    passthrough += ["--threads", str(args.threads)] if args.threads else []
    # Every uncompiled row before any compiled one: compilation costs most, so a run cut at its budget loses it first.
    for compile_mode, model_name, sampler in itertools.product(args.torch_compile, args.models, args.samplers):
        what = f"{model_name} {sampler} compile {compile_mode}"
        if sampler == "cold-28" and cold_pipeline_class() is None:
            report["gaps"].append(f"{what}: diffusion_lab.pipelines has no ColdDiffusionPipeline on this checkout")
            continue
        completed = subprocess.run([sys.executable, __file__, "--worker", model_name, sampler, compile_mode, *passthrough],
                                   capture_output=True, text=True)
        if completed.returncode != 0:
            report["gaps"].append(f"{what}: failed: {completed.stderr.strip().splitlines()[-1:]}")
            continue
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        report["results"].append(result)
        if args.output:  # as it goes: a run stopped at its time budget keeps what it measured
            write_json_atomically(args.output, report)
        if not args.json:
            print(f"{model_name:5s} {sampler:13s} compile {compile_mode:16s} batch {result['batch_size']:4d} "
                  f"{result['seconds']:8.2f} s {result['images_per_s']:9.2f} images/s  warm-up {result['warmup_seconds']:.1f} s  "
                  f"peak +{result['peak_memory_mb']:.0f} MB  (load {result['loadavg'][0]})", flush=True)
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["finished"] = True
    if args.output:
        write_json_atomically(args.output, report)
    if args.json:
        print(json.dumps(report))
    else:
        for gap in report["gaps"]:
            print(f"not measured: {gap}")


if __name__ == "__main__":
    main()
