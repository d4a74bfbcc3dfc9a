"""The autoguidance guide of a run: its own EMA weights from about a third of the way through training.

Autoguidance (Karras et al. 2024) pushes the model's prediction away from that of a weaker model with the same
errors, only larger. An earlier EMA of the same run is one: guiding the default recipe's 15-minute CPU model by its
EMA from a quarter to a third of the steps lowered the digit FD by 32-37 %, by an eighth of the steps hardly at all
(benchmarks/RESULTS.md, section 15). So that the guide is that age at every step (a grid, a checkpoint, the end of a
run of any length), weight snapshots are taken at geometrically spaced steps (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 19, ...:
each about 1.25 times the last) and the guide at step n is the latest snapshot at or before `fraction` x n, so between
0.8 and 1 times that. A snapshot is dropped once a later one is old enough to guide: six or seven are kept (15 MB for
`unet_small`), and checkpoints keep them too, so that a resumed run has the guide an uninterrupted one has.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

SNAPSHOT_RATIO = 1.25
SNAPSHOTS_FILE = "autoguidance_snapshots.safetensors"


def snapshot_steps(up_to: int) -> list[int]:
    """The steps at which snapshots are taken, up to `up_to`: ceil(1.25^k), each step once."""
    steps, power = [], 0
    while (step := math.ceil(SNAPSHOT_RATIO**power - 1e-9)) <= up_to:
        if not steps or step > steps[-1]:
            steps.append(step)
        power += 1
    return steps


class GuideSnapshots:
    """Weight snapshots (parameter name -> tensor) at `snapshot_steps`, and the guide of any step from them."""

    def __init__(self, fraction: float):
        if not 0 < fraction < 1:
            raise ValueError(f"the guide's fraction of the steps must be between 0 and 1, not {fraction}")
        self.fraction = fraction
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def guide_step(self, step: int) -> int | None:
        """The step whose weights guide the model of `step`: the latest snapshot step at or before fraction x step."""
        steps = snapshot_steps(math.floor(self.fraction * step + 1e-9))
        return steps[-1] if steps else None

    def take(self, step: int, named_weights) -> None:
        """After optimizer step `step`: if it is a snapshot step, keep a copy of `named_weights()` ((name, tensor)
        pairs, the EMA's where the run keeps one); drop the snapshots no later step can use."""
        if step in snapshot_steps(step):
            self.snapshots[step] = {name: weight.detach().clone() for name, weight in named_weights()}
        oldest_needed = self.guide_step(step)
        if oldest_needed is not None:
            for old in [kept for kept in self.snapshots if kept < oldest_needed]:
                del self.snapshots[old]

    def guide_for(self, step: int) -> dict[str, torch.Tensor] | None:
        """The guide's weights at `step`; None while fraction x step is before the first snapshot."""
        guide_step = self.guide_step(step)
        return None if guide_step is None else self.snapshots[guide_step]

    def save(self, folder: Path) -> None:
        tensors = {f"{step}/{name}": weight.contiguous() for step, weights in self.snapshots.items() for name, weight in weights.items()}
        save_file(tensors, Path(folder) / SNAPSHOTS_FILE, metadata={"fraction": repr(self.fraction)})

    def load(self, folder: Path, device: torch.device | str = "cpu") -> None:
        """Replace the snapshots by those `save` wrote into `folder`."""
        path = Path(folder) / SNAPSHOTS_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path.parent} holds no {SNAPSHOTS_FILE}, the autoguidance guide of its run: resume from a checkpoint "
                "written with the same --autoguidance_scale, or start a new run."
            )
        self.snapshots = {}
        for key, weight in load_file(path).items():  # read on the CPU: safetensors refuses devices such as "cpu:0"
            step, name = key.split("/", 1)
            self.snapshots.setdefault(int(step), {})[name] = weight.to(device)


def guide_model(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A copy of `model` holding the guide's `weights` (its parameters; the model has no other state to copy)."""
    guide = copy.deepcopy(model).requires_grad_(False)  # a copy, not a rebuild: that would draw from the training RNG
    missing = {name for name, _ in guide.named_parameters()} - weights.keys()
    if missing:
        raise ValueError(f"the autoguidance snapshot lacks {len(missing)} of the model's weights (e.g. {min(missing)}): it is another model's.")
    with torch.no_grad():
        for name, parameter in guide.named_parameters():
            parameter.grad = None
            parameter.copy_(weights[name])
    return guide
