"""Run a train script that pauses at one point, so that test_crash_safety.py can kill it exactly there.

    python tests/pausing_worker.py POINT SCRIPT [flags...]      (or under `accelerate launch`)

POINT is `step-N` (in step N, between forward and backward), `checkpoint-N` (writing checkpoint-N: the model is
saved, optimizer and RNG states are not), `pipeline` (swapping in a saved pipeline: its first part is moved in,
model_index.json is not), `grid-N` (about to draw the sample grid after step N), or `none`. The main process prints "paused at POINT" to stderr there and waits for a
signal; the production code has no test hooks, the points are wrapped here. `slow-N` pauses nowhere: from step N on,
every layer of the model sleeps SLOW_LAYER_SECONDS before it runs (a step of a large model on a loaded CPU), and
"slowed at slow-N" is printed when step N starts.
"""

import ctypes
import importlib
import os
import signal
import sys
import time
from pathlib import Path

# torch's launcher starts each rank in a session of its own, out of reach of the test's killpg: have the kernel
# kill this worker when its parent (the launcher) dies, so that no paused rank outlives a killed run.
PR_SET_PDEATHSIG = 1
ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

import accelerate.accelerator  # noqa: E402

from diffusion_lab.commands import run_command  # noqa: E402
from diffusion_lab.pipelines import export  # noqa: E402
from diffusion_lab.training import loop  # noqa: E402
from diffusion_lab.training import step as training_step  # noqa: E402

point, script, flags = sys.argv[1], sys.argv[2], sys.argv[3:]


def pause(name: str) -> None:
    if name == point and int(os.environ.get("RANK", "0")) == 0:
        print(f"paused at {name}", file=sys.stderr, flush=True)
        signal.pause()


def wrap(owner, name, before=None, after=None):
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        if before:
            before(*args)
        result = original(*args, **kwargs)
        if after:
            after(*args)
        return result

    setattr(owner, name, wrapped)


if os.environ.get("PAUSING_WORKER_DEATHSIG") != "production":
    # The trainer asks for SIGTERM when its launcher dies (it then stops with a checkpoint); a test that kills the
    # whole run wants every rank gone at once, as on a power cut: SIGKILL again.
    wrap(loop, "stop_with_launcher", after=lambda *_: ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL))

SLOW_LAYER_SECONDS = 0.5


def slow_down(running, global_step) -> None:
    if point == f"slow-{global_step + 1}":
        print(f"slowed at {point}", file=sys.stderr, flush=True)
        for module in running.model.modules():
            module.register_forward_pre_hook(lambda *_: time.sleep(SLOW_LAYER_SECONDS))


step = [0]
wrap(training_step.TrainingStep, "__call__", before=lambda self, global_step: step.__setitem__(0, global_step + 1) or slow_down(self, global_step))
wrap(accelerate.Accelerator, "backward", before=lambda *_: pause(f"step-{step[0]}"))
wrap(accelerate.accelerator, "save_accelerator_state", before=lambda output_dir, *_: pause(Path(output_dir).stem))
wrap(loop.Trainer, "save_sample_grid", before=lambda trainer, *_: pause(f"grid-{trainer.global_step}"))
moved = []
wrap(export, "_move_into_place", after=lambda entry, target: moved.append(entry) or (len(moved) == 1 and pause("pipeline")))

run_command(importlib.import_module(f"diffusion_lab.commands.{Path(script).stem}").main, flags)
