"""How many training runs share one device, decided from measured throughput.

A small model's GPU step is bound by kernel launches and host work, so one run leaves most of the GPU idle, and
several runs at once finish a table sooner, up to the point where the device is busy. The probe measures that
point: it starts k worker processes together (k = 1, 2, 4, ... up to a limit), each training the given model on
device-resident random tensors (forward, MSE, backward, Adam: the step's device work without the data path); once
every worker has warmed up they time the same window, and the aggregate throughput is the sum of their steps/s.
Doubling stops when it gains less than `MIN_GAIN`, and the chosen k is the smallest within `MIN_GAIN` of the best.

    python -m diffusion_lab.experiments.concurrency --model cnn --batch_size 128     # prints the measurements and the choice
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# A doubling of the runs must raise the aggregate steps/s by this fraction to be worth it.
MIN_GAIN = 0.15
READY_TIMEOUT_S = 300  # imports and CUDA start-up of all workers together


def choose_concurrency(throughputs: dict[int, float], min_gain: float = MIN_GAIN) -> int:
    """The smallest number of concurrent runs whose aggregate throughput is within `min_gain` of the best."""
    best = max(throughputs.values())
    return min(k for k, value in throughputs.items() if value * (1 + min_gain) >= best)


def _worker(args) -> None:
    """One probe process: warm up, say ready, wait for the common start, time `--seconds` of steps."""
    from ..models import build_model
    from ..training.precision import auto_mixed_precision

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.model, 28, 1, 1000).to(device)
    cuda = device.type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=cuda or None, foreach=not cuda or None)
    noisy = torch.randn(args.batch_size, 1, 28, 28, device=device)
    noise = torch.randn_like(noisy)
    timesteps = torch.randint(0, 1000, (args.batch_size,), device=device)
    bf16 = auto_mixed_precision(use_cpu=not cuda) == "bf16"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step():
        with autocast:
            prediction = model(noisy, timesteps).sample
        F.mse_loss(prediction.float(), noise).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if cuda:
        torch.cuda.synchronize()
    Path(args.ready).touch()
    while not Path(args.go).exists():
        time.sleep(0.005)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        step()
        steps += 1
        if cuda and steps % 10 == 0:
            torch.cuda.synchronize()  # keeps the host from queueing far past the window
    if cuda:
        torch.cuda.synchronize()
    print(json.dumps({"steps": steps, "seconds": time.perf_counter() - start}))


def measure(processes: int, model: str, batch_size: int, device: str, seconds: float) -> float:
    """Aggregate training steps/s of `processes` workers timing the same window."""
    with tempfile.TemporaryDirectory(prefix="concurrency-") as folder:
        go = Path(folder) / "go"
        ready = [Path(folder) / f"ready-{index}" for index in range(processes)]
        command = [sys.executable, "-m", "diffusion_lab.experiments.concurrency", "--model", model, "--batch_size", str(batch_size),
                   "--device", device, "--seconds", str(seconds), "--go", str(go)]
        workers = [subprocess.Popen([*command, "--ready", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for path in ready]
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not all(path.exists() for path in ready):
                failed = [worker for worker in workers if worker.poll() not in (None, 0)]
                if failed or time.monotonic() > deadline:
                    reason = failed[0].stderr.read().strip().splitlines()[-1:] if failed else "no start within the timeout"
                    raise RuntimeError(f"concurrency probe worker failed: {reason}")
                time.sleep(0.05)
            go.touch()
            results = [json.loads(worker.communicate()[0].strip().splitlines()[-1]) for worker in workers]
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
    return sum(result["steps"] / result["seconds"] for result in results)


def probe(model: str, batch_size: int, device: str, max_processes: int = 8, seconds: float = 2.0) -> dict:
    """Measure 1, 2, 4, ... concurrent runs until doubling stops paying; returns the figures and the choice."""
    throughputs, processes = {}, 1
    while processes <= max_processes:
        throughputs[processes] = measure(processes, model, batch_size, device, seconds)
        print(f"concurrency probe: {processes} run(s) of {model} at batch {batch_size} on {device}: "
              f"{throughputs[processes]:.1f} steps/s in all", flush=True)
        if processes > 1 and throughputs[processes] < (1 + MIN_GAIN) * throughputs[processes // 2]:
            break
        processes *= 2
    return {"model": model, "batch_size": batch_size, "device": device, "window_seconds": seconds,
            "steps_per_second": throughputs, "concurrency": choose_concurrency(throughputs)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=2.0, help="The timed window of each measurement.")
    parser.add_argument("--max_processes", type=int, default=8)
    parser.add_argument("--ready", help=argparse.SUPPRESS)  # a worker: the file that says it is warmed up
    parser.add_argument("--go", help=argparse.SUPPRESS)  # a worker: the file that starts the timed window
    args = parser.parse_args(argv)
    if args.ready:
        _worker(args)
        return
    if args.batch_size < 1 or args.seconds <= 0 or args.max_processes < 1:
        parser.error("--batch_size and --max_processes must be positive integers, --seconds a positive number")
    print(json.dumps(probe(args.model, args.batch_size, args.device, args.max_processes, args.seconds)))


if __name__ == "__main__":
    main()
