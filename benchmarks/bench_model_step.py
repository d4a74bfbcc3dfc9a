"""One training step of the bare model under each speed option, interleaved, against plain eager fp32.

    python benchmarks/bench_model_step.py --models cnn --variants eager channels_last bf16 fused
    python benchmarks/bench_model_step.py --models cnn unet --variants eager compile --json

Variants (each a fresh copy of the same model, seed 0, batch of random tensors in memory):
  eager          fp32, NCHW, torch.optim.Adam with its default (per-tensor on CPU) implementation, --threads threads
  channels_last  weights and inputs in channels-last memory format
  bf16           forward under torch.autocast(bfloat16) (what --mixed_precision bf16 does)
  foreach        Adam(foreach=True), the trainer's optimizer
  fused          Adam(fused=True)
  threads2       torch.set_num_threads(2) around the step (the others use --threads)
  compile        torch.compile(model) (inductor); compile time is the first step, reported apart
  no_mid_attention  a UNet without the self-attention of its middle block (as unet_small is built)
Options combine with '+': bf16+channels_last is the trainer's CPU default (bf16) with channels-last weights.
Rounds run the variants in turn (v1, v2, ..., v1, v2, ...) so that load from other processes hits all alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

VARIANTS = ("eager", "channels_last", "bf16", "foreach", "fused", "threads2", "compile", "no_mid_attention")


def variant(text: str) -> str:
    """A variant: eager, or options joined by '+' (e.g. bf16+channels_last)."""
    if text != "eager" and not set(text.split("+")) <= set(VARIANTS[1:]):
        raise argparse.ArgumentTypeError(f"{text}: use eager or options from {', '.join(VARIANTS[1:])} joined by '+'")
    return text


def parse_args(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["cnn"])
    parser.add_argument("--variants", nargs="+", type=variant, default=["eager", "channels_last", "bf16", "foreach", "fused"])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="Untimed steps per variant after the first.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def make_step(model_name: str, variant: str, batch_size: int, threads: int):
    from diffusion_lab.models import build_model

    options = set(variant.split("+"))
    torch.manual_seed(0)
    model = build_model(model_name, 28, 1, 1000)
    if "no_mid_attention" in options:
        # Without the config's private keys: `_use_default_values` would make from_config drop add_attention again.
        model = type(model).from_config({**{k: v for k, v in model.config.items() if not k.startswith("_")}, "add_attention": False})
    memory_format = torch.channels_last if "channels_last" in options else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer_options = {"foreach": True} if "foreach" in options else {"fused": True} if "fused" in options else {}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, **optimizer_options)
    if "compile" in options:
        model = torch.compile(model)
    generator = torch.Generator().manual_seed(0)
    noisy = torch.randn(batch_size, 1, 28, 28, generator=generator).contiguous(memory_format=memory_format)
    noise = torch.randn(noisy.shape, generator=generator)
    timesteps = torch.randint(0, 1000, (batch_size,), generator=generator)
    step_threads = 2 if "threads2" in options else threads

    def step() -> float:
        torch.set_num_threads(step_threads)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if "bf16" in options else contextlib.nullcontext()
        start = time.perf_counter()
        with autocast:
            prediction = model(noisy, timesteps).sample
        loss = F.mse_loss(prediction.float(), noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        torch.set_num_threads(threads)
        return seconds

    return step


def bench_model(model_name: str, args) -> dict:
    steps = {variant: make_step(model_name, variant, args.batch_size, args.threads) for variant in args.variants}
    first = {variant: step() for variant, step in steps.items()}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    seconds = {variant: [] for variant in steps}
    for _ in range(args.rounds):
        for variant, step in steps.items():
            seconds[variant].append(step())
    baseline = seconds.get("eager")
    result = {}
    for variant, times in seconds.items():
        result[variant] = {"ms_per_step": round(1000 * statistics.median(times), 1), "first_step_s": round(first[variant], 2),
                           "ms_per_step_rounds": [round(1000 * t, 1) for t in times]}
        if baseline is not None:
            result[variant]["speedup_vs_eager"] = round(statistics.median(b / t for b, t in zip(baseline, times)), 3)
    return result


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {"torch": torch.__version__, "cores": os.cpu_count(), "config": {k: v for k, v in vars(args).items() if k != "json"},
              "loadavg_start": [round(x, 2) for x in os.getloadavg()], "models": {}}
    for model_name in args.models:
        report["models"][model_name] = bench_model(model_name, args)
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(report))
        return
    print(f"batch {args.batch_size}, {args.rounds} rounds, threads {args.threads}; "
          f"load average {report['loadavg_start']} -> {report['loadavg_end']}")
    for model_name, result in report["models"].items():
        for variant, figures in result.items():
            speedup = f"  x{figures['speedup_vs_eager']:.2f} vs eager" if "speedup_vs_eager" in figures else ""
            print(f"{model_name:5s} {variant:14s} {figures['ms_per_step']:9.1f} ms/step  first step {figures['first_step_s']:6.1f} s{speedup}")


if __name__ == "__main__":
    main()
