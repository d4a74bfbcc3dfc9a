"""One optimizer step of the training loop: the batch, the objective's loss, backward, clipping, the optimizer, the LR
schedule and the EMA.

`TrainingStep` runs it eagerly through Accelerate (any device, any number of processes, gradient accumulation).
`GraphedTrainingStep` (`--cuda_graph`, one CUDA process) does the same arithmetic with no host work inside the step:
batch indices go into a device buffer, noise and timesteps are drawn on the device, the learning rate and the EMA
decay are device scalars, so the whole step can be captured once in a CUDA graph and replayed. A small model's GPU
step is bound by the host launching its hundreds of kernels; a replay launches them all at once.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch
from accelerate import Accelerator

from ..data import ImageCache, ShardedBatches, random_flip
from .arguments import CUDA_GRAPH_MODES, ArgumentError
from .objective import Objective

# Eager steps before the capture: cuDNN and the allocator settle on a side stream first (torch.cuda.graphs' advice).
WARMUP_STEPS = 3


class TrainingStep:
    """Call with the number of steps done so far; returns the mean loss (on the device) and whether the update was
    skipped for a non-finite loss (--skip_nonfinite).

    Without --skip_nonfinite, the first step with a non-finite loss is only recorded, on the device, in
    `first_nonfinite_step` (0: none yet), and acted on at the loop's next host sync.
    """

    def __init__(self, args: argparse.Namespace, accelerator: Accelerator, objective: Objective, model, optimizer, lr_scheduler,
                 ema, train_data: ImageCache, batches: ShardedBatches, steps_per_epoch: int):
        self.args, self.accelerator, self.objective = args, accelerator, objective
        self.model, self.optimizer, self.lr_scheduler, self.ema = model, optimizer, lr_scheduler, ema
        self.train_data, self.batches, self.steps_per_epoch = train_data, batches, steps_per_epoch
        self.first_nonfinite_step = torch.zeros((), dtype=torch.long, device=accelerator.device)

    def indices(self, micro_batch: int) -> np.ndarray:
        """The image indices of one micro-batch: the same for a resumed run as for an uninterrupted one."""
        per_epoch = self.steps_per_epoch * self.args.gradient_accumulation_steps
        return self.batches.indices(*divmod(micro_batch, per_epoch))

    def batch(self, indices, with_labels: bool = False):
        """The images at `indices` (numpy, or a tensor on the images' device); with `with_labels`, (images, labels),
        labels None for unconditional runs."""
        images = self.train_data.batch(indices).to(self.accelerator.device, non_blocking=True)
        if self.args.random_flip:  # on the device, so that both data paths draw the same flips
            images = random_flip(images)
        if not with_labels:
            return images
        labels = None if self.train_data.labels is None else self.train_data.batch_labels(indices).to(self.accelerator.device)
        return images, labels

    def _loss(self, model, clean, labels) -> torch.Tensor:
        return self.objective.loss(model, clean, **({} if labels is None else {"class_labels": labels}))

    def _on_any_process(self, flag: torch.Tensor) -> bool:
        return bool(self.accelerator.reduce(flag.float(), reduction="sum") > 0)

    def __call__(self, global_step: int) -> tuple[torch.Tensor, bool]:
        accelerator, args = self.accelerator, self.args
        total = torch.zeros((), device=accelerator.device)
        nonfinite = torch.zeros((), dtype=torch.bool, device=accelerator.device)
        skipped = False
        if args.torch_compile and args.torch_compile_mode in CUDA_GRAPH_MODES:
            # A new step: CUDA-graph outputs of the last one may be overwritten now, as torch.compile requires to be told.
            torch.compiler.cudagraph_mark_step_begin()
        for micro in range(args.gradient_accumulation_steps):
            clean, labels = self.batch(self.indices(global_step * args.gradient_accumulation_steps + micro), with_labels=True)
            with accelerator.accumulate(self.model):
                loss = self._loss(self.model, clean, labels)
                accelerator.backward(loss)
                nonfinite |= ~torch.isfinite(loss.detach())
                if accelerator.sync_gradients:
                    # Gradients are shared, so every process must agree to skip (one sync per step, opt-in).
                    skipped = args.skip_nonfinite and self._on_any_process(nonfinite)
                    if not skipped:
                        if args.max_grad_norm > 0:
                            accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                        self.optimizer.step()
                self.lr_scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            total += loss.detach()
        if not args.skip_nonfinite:
            self.first_nonfinite_step = torch.where(nonfinite & (self.first_nonfinite_step == 0), global_step + 1, self.first_nonfinite_step)
        if self.ema is not None:
            self.ema.step(self.model.parameters())
        return total / args.gradient_accumulation_steps, skipped


def check_graphed_step(args: argparse.Namespace, num_processes: int, device: torch.device, mixed_precision: str,
                       data_on_device: bool | None = None) -> None:
    """--cuda_graph: refuse, in one line, settings the graphed step cannot run with (`data_on_device` None: not known
    yet, before the data is loaded)."""
    if not args.cuda_graph:
        return
    missing = {
        "a CUDA device": device.type != "cuda",
        "one process": num_processes > 1,
        "--gradient_accumulation_steps 1": args.gradient_accumulation_steps > 1,
        "no --skip_nonfinite (it syncs every step)": args.skip_nonfinite,
        "no --torch_compile (the step is captured instead)": args.torch_compile,
        "--mixed_precision bf16 or no (fp16 scales the loss on the host)": mixed_precision == "fp16",
        "the training images on the device (--data_on_device)": data_on_device is False or args.data_on_device is False,
    }
    needed = [need for need, is_missing in missing.items() if is_missing]
    if needed:
        raise ArgumentError(f"--cuda_graph needs {', '.join(needed)}: drop --cuda_graph or change the flags.")


class GraphedTrainingStep(TrainingStep):
    """The step with every operand on the device, captured in a CUDA graph after `WARMUP_STEPS` eager steps.

    Same arithmetic as `TrainingStep` with one process and no accumulation: the optimizer must be made with
    `capturable=True` and a tensor learning rate (`make_optimizer(..., graphed=True)`), the EMA is updated from a
    device decay. On a CPU (`capture=False`, the tests) the same step runs eagerly.
    """

    def __init__(self, *args, capture: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        device = self.accelerator.device
        self.capture = capture and device.type == "cuda"
        # Without accelerate's autocast wrapper: ours below keeps no cast-weight cache, which a capture cannot hold.
        self.model = self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)
        self.parameters = [parameter for parameter in self.model.parameters() if parameter.requires_grad]
        self.index_buffer = torch.zeros(self.args.train_batch_size, dtype=torch.long, device=device)
        self.ema_weight = torch.zeros((), device=device)  # 1 - decay of this step
        self.step_number = torch.zeros((), dtype=torch.long, device=device)
        self.loss = torch.zeros((), device=device)
        self.graph = None
        self.calls = 0
        self.capture_seconds = None  # how long the capture took, for the run's records

    def _autocast(self):
        if self.accelerator.mixed_precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.accelerator.device.type, dtype=torch.bfloat16, cache_enabled=False)

    def _body(self) -> None:
        """One step from `index_buffer`, `ema_weight` and the optimizer's device learning rate: no host sync."""
        self.optimizer.zero_grad(set_to_none=False)  # the gradients keep their memory: the graph holds its addresses
        clean, labels = self.batch(self.index_buffer, with_labels=True)
        with self._autocast():
            loss = self._loss(self.model, clean, labels)
        loss.backward()
        if self.args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.args.max_grad_norm, foreach=True)
        self.optimizer.step()
        if self.ema is not None:
            # shadow <- shadow - (1 - decay) (shadow - weight), as EMAModel.step does with a host decay
            shadow = self.ema.shadow_params
            torch._foreach_sub_(shadow, torch._foreach_mul(torch._foreach_sub(shadow, self.parameters), self.ema_weight))
        self.step_number += 1
        self.first_nonfinite_step.copy_(torch.where(~torch.isfinite(loss) & (self.first_nonfinite_step == 0), self.step_number, self.first_nonfinite_step))
        self.loss.copy_(loss.detach())

    def __call__(self, global_step: int) -> tuple[torch.Tensor, bool]:
        indices = torch.from_numpy(np.sort(self.indices(global_step)))
        self.index_buffer.copy_(indices, non_blocking=True)
        self.step_number.fill_(global_step)
        if self.ema is not None:
            self.ema.optimization_step += 1
            decay = self.ema.get_decay(self.ema.optimization_step)
            self.ema.cur_decay_value = decay
            self.ema_weight.fill_(1 - decay)
        self.calls += 1
        if not self.capture:
            self._body()
        elif self.graph is not None:
            self.graph.replay()
        elif self.calls <= WARMUP_STEPS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._body()
            torch.cuda.current_stream().wait_stream(side)
        else:
            start = time.perf_counter()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._body()
            self.graph.replay()  # capturing records the step, it does not run it
            torch.cuda.synchronize()
            self.capture_seconds = time.perf_counter() - start
        self.lr_scheduler.step()  # writes the next learning rate into the optimizer's device tensor
        return self.loss, False


def make_training_step(args: argparse.Namespace, *pieces) -> TrainingStep:
    """The step the flags ask for (`check_graphed_step` has passed): graphed with --cuda_graph, else eager."""
    return (GraphedTrainingStep if args.cuda_graph else TrainingStep)(args, *pieces)


def make_optimizer(args: argparse.Namespace, parameters, device: torch.device, graphed: bool = False) -> torch.optim.Optimizer:
    """Adam(W) as the flags say. On CUDA one fused kernel updates every parameter; elsewhere the foreach implementation
    is torch's fastest. `graphed`: capturable, with the learning rate a device tensor the LR schedule fills in."""
    optimizer_class = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    implementation = {"fused": True} if device.type == "cuda" else {"foreach": True}
    learning_rate = args.learning_rate
    if graphed:  # fused takes a tensor learning rate on every device (foreach does not)
        implementation = {"fused": True, "capturable": True}
        learning_rate = torch.tensor(args.learning_rate, device=device)
    optimizer = optimizer_class(
        parameters, lr=learning_rate, betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay, eps=args.adam_epsilon, **implementation,
    )
    if graphed:
        for group in optimizer.param_groups:
            # A float base: the LR schedule then computes each rate on the host and fills the tensor (no sync).
            group["initial_lr"] = args.learning_rate
    return optimizer
