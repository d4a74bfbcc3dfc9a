"""The one training loop behind train_ddpm.py and train_cold.py.

An *objective* (`training.objective.Objective`: DDPM noise prediction, cold-diffusion restoration) says what is
learnt: the loss of a batch, the pipeline to save, how that pipeline draws sample grids. Everything else lives
here: data, Accelerate, EMA, LR schedule, logging, sample grids, checkpoints, exact resume, the final pipeline and
the Hub.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import random
import signal
import sys
import time
import warnings
from contextlib import nullcontext, suppress
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, TorchDynamoPlugin, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from ..data import ShardedBatches, keep_on_device, load_image_caches
from ..hub import check_hub_access, prepare_upload, push
from ..models import build_model
from ..pipelines import ClusterConditionalDDPMPipeline
from ..pipelines.export import save_pipeline
from ..run_files import append_metrics, public_args, write_run_info
from ..sampling import autocast_with_fp32_outputs, check_sampling_fits, draw, image_grid
from ..stopping import (
    RESUME_HINT,
    RunFolderWatch,
    SamplingStopped,
    StepAbandoned,
    StopSignals,
    TrainingStopped,
    quiet_tensorboard_writer,
    stop_if_unwritable,
    stop_with_launcher,
)
from .arguments import ArgumentError, training_warnings, validate_training_args
from .autoguidance import GuideSnapshots, guide_model
from .checkpoints import (
    check_resumable,
    check_same_model,
    complete_checkpoints,
    last_checkpoint_name,
    register_checkpoint_hooks,
    resolve_resume_path,
    save_checkpoint,
    step_of,
)
from .cluster_conditioning import label_by_clusters
from .objective import Objective
from .precision import auto_mixed_precision
from .recipes import describe_recipe, recipe_clusters
from .run_folder import RunFolderBusy, RunLock, check_output_dir, move_abandoned_future_aside, move_aside
from .step import GraphedTrainingStep, check_graphed_step, make_optimizer, make_training_step

VALIDATION_SEED = 1234


class MetricsLog:
    """Appends each logged step to the run's `metrics.jsonl` (main process only) and mirrors it to the trackers."""

    def __init__(self, accelerator: Accelerator, run_dir: Path):
        self.accelerator = accelerator
        self.run_dir = run_dir

    def log(self, values: dict, step: int) -> None:
        self.accelerator.log({k: v for k, v in values.items() if k not in ("step", "epoch")}, step=step)
        if self.accelerator.is_main_process:
            append_metrics(self.run_dir, step, values)


def _check_model_takes(model, channels: int, resolution: int, conditional: bool = False) -> None:
    """Fail before training, not at the first step, when the model cannot take the data's image size."""
    config = model.config
    if config.sample_size != resolution or config.in_channels != channels:
        raise ArgumentError(
            f"the model takes {config.in_channels}x{config.sample_size}x{config.sample_size} images but the data is "
            f"{channels}x{resolution}x{resolution}: pass a matching --resolution or model config."
        )
    try:
        with torch.no_grad():
            labels = {"class_labels": torch.zeros(1, dtype=torch.long)} if conditional else {}
            model(torch.zeros(1, channels, resolution, resolution), torch.zeros(1, dtype=torch.long), **labels)
    except RuntimeError:
        levels = len(getattr(config, "block_out_channels", ())) - 1
        raise ArgumentError(
            f"the model cannot take {resolution}x{resolution} images (it halves them {levels} times): "
            f"use a --resolution divisible by {2 ** max(levels, 0)}, e.g. 28 or 32."
        ) from None


def _use_deterministic_algorithms() -> None:
    """Bitwise-repeatable GPU runs at some cost in speed (see docs/determinism.md); CPU runs are repeatable anyway."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when CUDA starts; older torch needs it
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


class Trainer:
    def __init__(self, args: argparse.Namespace, objective: Objective, argv: list[str]):
        self.args = args
        self.objective = objective
        self.output_dir = Path(args.output_dir)
        stop_with_launcher()  # a SIGTERM to the launcher alone stops this process too, with a checkpoint
        if args.deterministic:
            _use_deterministic_algorithms()
        if args.mixed_precision == "auto":
            # Recorded as resolved, so training_args.json and the model card say what was used.
            args.mixed_precision = auto_mixed_precision(use_cpu=os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true"))
        accelerator_kwargs = {"mixed_precision": args.mixed_precision}
        if args.torch_compile:  # accelerator.prepare compiles the model
            accelerator_kwargs["dynamo_plugin"] = TorchDynamoPlugin(backend="inductor", mode=args.torch_compile_mode)
        self.accelerator = Accelerator(
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            log_with=None if args.logger == "none" else args.logger,
            project_config=ProjectConfiguration(project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")),
            **accelerator_kwargs,
        )
        accelerator = self.accelerator
        if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
            raise ArgumentError(
                "--mixed_precision fp16 needs a GPU: on a CPU the run would train in fp32 while its records say fp16. "
                "Use --mixed_precision bf16 (or no) on a CPU."
            )
        check_graphed_step(args, accelerator.num_processes, accelerator.device, accelerator.mixed_precision)  # before any data
        if accelerator.is_main_process:
            for warning in training_warnings(args):
                print(warning, file=sys.stderr, flush=True)
        if args.allow_tf32 and not args.deterministic and accelerator.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.lock = None
        self.folder_watch = None  # from the first write into the run folder
        self.created_output_dir = False
        if accelerator.is_main_process:
            check_output_dir(self.output_dir, resuming=args.resume_from_checkpoint is not None, overwrite=args.overwrite_output_dir)
            self.created_output_dir = not self.output_dir.exists()
            self._take_run_folder()
        accelerator.wait_for_everyone()
        try:
            self._set_up(argv)
        except BaseException:
            self.release_run_folder(failed=True)
            raise

    def _take_run_folder(self) -> None:
        """Create the folder if needed and lock it for this run (main process): a second run on it is refused."""
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.lock = RunLock(self.output_dir)
            self.lock.acquire()
        except RunFolderBusy:
            raise
        except OSError as error:
            self.release_run_folder(failed=True)
            raise PermissionError(f"cannot write to --output_dir {self.output_dir} ({error.strerror}): choose a writable folder.") from None

    def release_run_folder(self, failed: bool = False) -> None:
        """Give up the lock; a folder this run created and left empty (it failed a check) is removed again."""
        if self.lock is not None:
            self.lock.release()
        if self.folder_watch is not None:
            self.folder_watch.close()
        if failed and self.created_output_dir and self.output_dir.is_dir() and not any(self.output_dir.iterdir()):
            self.output_dir.rmdir()

    def _set_up(self, argv: list[str]) -> None:
        """Data, model, optimizer, resume: every check before anything is written into the run folder."""
        args, objective, accelerator = self.args, self.objective, self.accelerator
        set_seed(args.seed, device_specific=True)

        self.train_data, self.validation_data = load_image_caches(
            args.dataset_name, args.train_data_dir, args.image_column, args.resolution or 28, args.center_crop,
            args.validation_fraction, args.max_train_samples, args.seed,
            is_main_process=accelerator.is_main_process, wait_for_everyone=accelerator.wait_for_everyone,
            label_column=args.label_column if args.class_conditional else None,
        )
        channels, resolution = self.train_data.channels, self.train_data.images.shape[-1]
        checkpoint = resolve_resume_path(self.output_dir, args.resume_from_checkpoint) if args.resume_from_checkpoint else None
        if objective.num_clusters and args.clusters_from_recipe:
            objective.num_clusters = args.cluster_conditioning = recipe_clusters(objective.num_clusters, len(self.train_data))
        if objective.num_clusters:
            began = time.perf_counter()
            centroids, sizes = label_by_clusters(self.train_data, self.validation_data, objective.num_clusters, args.seed, checkpoint)
            objective.use_clusters(centroids, sizes, args.label_dropout)
            accelerator.print(f"Cluster conditioning: {objective.num_clusters} k-means clusters of the pixels in {time.perf_counter() - began:.0f} s, "
                              f"from {sizes.min():.1%} to {sizes.max():.1%} of the images each.")
        self.data_on_device = keep_on_device(args.data_on_device, accelerator.device, self.train_data.nbytes)
        if self.data_on_device:
            self.train_data = self.train_data.to(accelerator.device)
        check_graphed_step(args, accelerator.num_processes, accelerator.device, accelerator.mixed_precision, self.data_on_device)
        if args.class_conditional:
            objective.use_classes(self.train_data.class_names, args.label_dropout)
        # Every process builds the same initial weights.
        torch.manual_seed(args.seed)
        model = build_model(args.model, resolution, channels, objective.num_train_timesteps, args.model_config_name_or_path,
                            num_classes=self.train_data.num_classes, dropout=args.dropout)
        _check_model_takes(model, channels, resolution, self.train_data.num_classes is not None)
        # Sample grids and evaluation hold their images (float32) on the device until they are scored.
        images_flag = "--eval_num_samples" if args.eval_every_epochs else "--eval_batch_size"
        check_sampling_fits(model, getattr(args, images_flag[2:]), args.eval_batch_size, accelerator.device, value_bytes=4,
                            flags=(images_flag, "--eval_batch_size"))
        set_seed(args.seed, device_specific=True)
        self.batches = ShardedBatches(len(self.train_data), args.train_batch_size, accelerator.num_processes, accelerator.process_index, args.seed)
        self.steps_per_epoch = self.batches.batches_per_epoch // args.gradient_accumulation_steps
        if self.steps_per_epoch == 0:
            raise ArgumentError("--gradient_accumulation_steps is larger than the batches in one epoch: lower it or add data.")
        self.max_train_steps = args.max_train_steps or args.num_epochs * self.steps_per_epoch
        # What a checkpoint records of its run, and what a resume must match (the precision actually used included).
        self.run_config = {**public_args(args), "mixed_precision": accelerator.mixed_precision, "objective": type(objective).__name__}
        if checkpoint is not None and (warning := check_resumable(checkpoint, self.run_config, args.allow_unchecked_resume)):
            if accelerator.is_main_process:
                print(warning, file=sys.stderr, flush=True)
        if checkpoint is not None:
            check_same_model(checkpoint, model)
        if checkpoint is not None and step_of(checkpoint) > self.max_train_steps:
            raise ArgumentError(
                f"{checkpoint.name} is past the {self.max_train_steps} steps asked for: raise --max_train_steps / "
                "--num_epochs, or resume from an earlier checkpoint."
            )

        self.ema = EMAModel(
            model.parameters(), decay=args.ema_max_decay, use_ema_warmup=True, inv_gamma=args.ema_inv_gamma,
            power=args.ema_power, model_cls=type(model), model_config=model.config, foreach=True,
        ) if args.use_ema else None
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model = model.to(accelerator.device)  # before the optimizer: fused AdamW wants its parameters on the GPU
        optimizer = make_optimizer(args, model.parameters(), accelerator.device, graphed=args.cuda_graph)
        # The prepared LR scheduler steps once per process per optimizer step (see diffusers' examples).
        lr_scheduler = get_scheduler(
            args.lr_scheduler, optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
            num_training_steps=self.max_train_steps * accelerator.num_processes,
        )
        self.model, self.optimizer, self.lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
        if self.ema is not None:
            self.ema.to(accelerator.device)
        self.guides = GuideSnapshots(objective.autoguidance[1]) if objective.autoguidance else None
        register_checkpoint_hooks(accelerator, self.ema, objective, self.guides)
        # Stop requests are agreed over a CPU group each step, which costs no device sync.
        self.stop_group = torch.distributed.new_group(backend="gloo") if accelerator.num_processes > 1 else None
        self.signals = StopSignals()
        self.step = make_training_step(args, accelerator, objective, self.model, self.optimizer, self.lr_scheduler, self.ema,
                                       self.train_data, self.batches, self.steps_per_epoch)
        # A stop gives up the step in flight (see StopSignals.abandoning_steps). Not across processes, where one could
        # give up its step while another waits in the step's gradient all-reduce (torchrun waits 30 s before it kills
        # them), nor for a compiled or CUDA-graphed step, whose graph the hooks would break.
        self.abandons_steps = accelerator.num_processes == 1 and not args.torch_compile and not args.cuda_graph

        self.global_step = 0
        self.pipeline_step = None  # the step whose weights the saved pipeline holds
        if checkpoint is not None:
            accelerator.print(f"Resuming from {checkpoint}")
            try:
                with warnings.catch_warnings():
                    # torch warns of a pickle protocol it does not write before refusing it: the refusal says it all.
                    warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
                    accelerator.load_state(str(checkpoint))
            except pickle.UnpicklingError as error:
                # accelerate reads optimizer/scheduler/RNG state with torch.load(weights_only=True): anything but plain
                # tensors and numbers is refused there, not run.
                reason = str(error).strip().splitlines()[0][:120]
                raise ValueError(
                    f"{checkpoint} holds optimizer/scheduler/RNG state that is not plain tensor data ({reason}): refused. "
                    "Resume only from checkpoints your own runs wrote."
                ) from None
            self.global_step = step_of(checkpoint)
            saved_by = len(list(checkpoint.glob("random_states_*.pkl")))
            if saved_by != accelerator.num_processes:
                accelerator.print(
                    f"warning: {checkpoint.name} was written by {saved_by} process(es), this run has "
                    f"{accelerator.num_processes}: training goes on but will not repeat an uninterrupted run exactly."
                )
        if args.push_to_hub and accelerator.is_main_process:
            # A token, the network and write access are checked now, not after all the training.
            args.hub_model_id = check_hub_access(args.hub_model_id, args.hub_token, args.hub_private_repo)
        # Every check has passed: only now is anything written into the run folder.
        if accelerator.is_main_process:
            if args.overwrite_output_dir and checkpoint is None:
                aside = move_aside(self.output_dir, self.lock)
                if aside is not None:
                    print(f"--overwrite_output_dir: moved the earlier run in {self.output_dir} to {aside} (nothing was "
                          "deleted; remove that folder when you no longer need it).", file=sys.stderr, flush=True)
            later = [path for path in complete_checkpoints(self.output_dir) if checkpoint is not None and step_of(path) > step_of(checkpoint)]
            if later:
                aside = move_abandoned_future_aside(self.output_dir, checkpoint, later)
                print(f"resuming from {checkpoint.name}, not the run's latest checkpoint, starts a branch: moved "
                      f"{', '.join(path.name for path in later)} to {aside} (nothing was deleted), so that 'latest' "
                      "continues this branch.", file=sys.stderr, flush=True)
            write_run_info(self.output_dir, args, argv, run={
                "num_processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision,
                "train_images": len(self.train_data), "validation_images": len(self.validation_data),
                "max_train_steps": self.max_train_steps, "num_epochs": math.ceil(self.max_train_steps / self.steps_per_epoch), "steps_per_epoch": self.steps_per_epoch,
                "data_on_device": self.data_on_device,
            })
            accelerator.init_trackers("train", config={k: v for k, v in public_args(args).items() if isinstance(v, (int, float, str, bool))})
        accelerator.wait_for_everyone()
        self.folder_watch = RunFolderWatch(self.output_dir)
        self.metrics = MetricsLog(accelerator, self.output_dir)

    # -- between steps ------------------------------------------------------------------------------------------

    def _agreed_requests(self, checkpoint_time: bool = False) -> tuple[int, bool, bool]:
        """The signal any process received (0: none), whether the main process's clock says a checkpoint is due
        (`checkpoint_time`, --checkpointing_minutes), and whether the run folder was deleted, moved or replaced, agreed
        by all processes so that they stop or checkpoint after the same step."""
        folder_changed = self.folder_watch.changed()
        if self.stop_group is None:
            return self.signals.received, checkpoint_time, folder_changed
        requests = torch.tensor([self.signals.received, int(checkpoint_time and self.accelerator.is_main_process), int(folder_changed)])
        torch.distributed.all_reduce(requests, op=torch.distributed.ReduceOp.MAX, group=self.stop_group)
        return int(requests[0]), bool(requests[1]), bool(requests[2])

    def _kept_checkpoint_steps(self, step: int) -> bool:
        """--keep_epoch_checkpoints: the checkpoint of each epoch's last step (and of the last step) is never pruned."""
        return self.args.keep_epoch_checkpoints and (step % self.steps_per_epoch == 0 or step == self.max_train_steps)

    def _stop_if_nonfinite(self) -> None:
        """Called before anything is logged or written: stop if a loss was not finite since the last call."""
        first = self.accelerator.gather(self.step.first_nonfinite_step.reshape(1))
        first = first[first > 0]
        if len(first) and not complete_checkpoints(self.output_dir):
            raise TrainingStopped(
                f"the loss was not finite at step {int(first.min())}; stopped at step {self.global_step} before any "
                "checkpoint was written, so there is nothing to resume: start afresh (--overwrite_output_dir) with a "
                "lower --learning_rate, a smaller --max_grad_norm, or --skip_nonfinite (skips such steps).",
                exit_code=1,
            )
        if len(first):
            raise TrainingStopped(
                f"the loss was not finite at step {int(first.min())}; stopped at step {self.global_step} without saving, "
                f"the last checkpoint ({last_checkpoint_name(self.output_dir)}) is intact. Resume it with --resume_from_checkpoint "
                "latest and --skip_nonfinite (skips such steps) or a smaller --max_grad_norm, or start afresh with a "
                "lower --learning_rate.",
                exit_code=1,
            )

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Mean loss over this process's share of the validation subset, with fixed noise, averaged over processes."""
        accelerator, args = self.accelerator, self.args
        model = self.eager_model
        model.eval()
        generator = torch.Generator().manual_seed(VALIDATION_SEED + accelerator.process_index)
        subset = min(len(self.validation_data), args.max_validation_samples or len(self.validation_data))
        shard = np.arange(accelerator.process_index, subset, accelerator.num_processes)
        losses, counts = [], []
        batches = range(0, len(shard), args.eval_batch_size)
        # disable=None: bars for the steps inside an epoch on terminals only, not in logs.
        for start in tqdm(batches, desc="validation", leave=False, disable=None if accelerator.is_local_main_process else True):
            indices = shard[start : start + args.eval_batch_size]
            clean = self.validation_data.batch(indices).to(accelerator.device)
            labels = {} if self.validation_data.labels is None else {"class_labels": self.validation_data.batch_labels(indices).to(accelerator.device)}
            with accelerator.autocast():
                losses.append(self.objective.loss(model, clean, generator=generator, **labels) * len(indices))
            counts.append(len(indices))
        model.train()
        totals = torch.stack([torch.stack(losses).sum(), torch.tensor(float(sum(counts)), device=accelerator.device)])
        totals = accelerator.reduce(totals, reduction="sum")
        return (totals[0] / totals[1]).item()

    @property
    def eager_model(self):
        """The model without wrappers: evaluation, sampling and saving run it uncompiled (no recompiles per shape)."""
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    def _guide_weights(self):
        """(name, tensor) of the weights the pipeline is saved with: the EMA's where the run keeps one."""
        names = [name for name, _ in self.eager_model.named_parameters()]
        return zip(names, self.ema.shadow_params) if self.ema is not None else self.eager_model.named_parameters()

    def _pipeline(self, model, guided: bool = True):
        """The objective's pipeline around `model`, autoguided by the run's guide for this step where it keeps one
        (and `guided`)."""
        weights = self.guides.guide_for(self.global_step) if self.guides is not None and guided else None
        return self.objective.pipeline(model) if weights is None else self.objective.pipeline(model, guide_model(model, weights))

    def _with_ema_weights(self, action):
        model = self.eager_model
        if self.ema is None:
            return action(model)
        self.ema.store(model.parameters())
        self.ema.copy_to(model.parameters())
        try:
            return action(model)
        finally:
            self.ema.restore(model.parameters())

    def generate(self, num_images: int, description: str, seed: int | None = None, guided: bool = True) -> torch.Tensor:
        """`num_images` images in [-1, 1] from the saved (EMA) weights with the run's sampler, in batches of
        --eval_batch_size, from the same noise at every call (that of `seed`, by default --seed), autoguided where the
        run keeps a guide (unless not `guided`). Class-conditional runs draw an equal share of each class over all
        `num_images` (the classes in order); cluster-conditional ones draw the clusters of all `num_images` first, so
        that the set is in proportion, not each batch. A stop signal ends it at the next model call (SamplingStopped)."""
        args = self.args
        generator = torch.Generator().manual_seed(args.seed if seed is None else seed)
        starts = range(0, num_images, args.eval_batch_size)
        sizes = [min(args.eval_batch_size, num_images - start) for start in starts]
        # One batch (a grid): the sampler's own bar over its steps; several: a bar over the batches.
        per_step = description if len(sizes) == 1 else None
        batches = tqdm(sizes, desc=description, leave=False, disable=None if len(sizes) > 1 and self.accelerator.is_local_main_process else True)

        def draw_batches(model):
            pipeline = self._pipeline(model, guided)
            labels = self.objective.grid_labels(num_images)
            if isinstance(pipeline, ClusterConditionalDDPMPipeline):
                labels = pipeline.draw_cluster_labels(num_images, generator)
            with self.signals.interrupting(model), autocast_with_fp32_outputs(model, self.accelerator.autocast()):
                return torch.cat([draw(pipeline, size, generator, args.num_inference_steps, progress=per_step,
                                       class_labels=None if labels is None else labels[start : start + size],
                                       **self.objective.sampling_options())
                                  for start, size in zip(starts, batches)]).float()

        return self._with_ema_weights(draw_batches)

    def save_sample_grid(self, name: str) -> Path:
        """--eval_batch_size images; class-conditional runs: one row per class (the classes are drawn in order)."""
        num_classes = self.train_data.num_classes if self.objective.labels_in_grid else None
        columns = None if num_classes is None else max(1, self.args.eval_batch_size // num_classes)
        images = self.generate(self.args.eval_batch_size if columns is None else columns * num_classes, f"sample grid {name}")
        path = self.output_dir / "samples" / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        grid = image_grid(images, columns)
        grid.save(path)
        if self.args.logger == "tensorboard":
            self.accelerator.get_tracker("tensorboard").log_images({"samples": np.asarray(grid.convert("RGB"))[None]}, self.global_step, dataformats="NHWC")
        return path

    def evaluate_samples(self, epoch: int) -> None:
        """Sample-quality metrics of --eval_num_samples images against the validation split, logged as eval/*."""
        from ..evaluation import evaluate_images, summary_line

        args = self.args
        images = self.generate(args.eval_num_samples, "evaluation samples")
        reference = torch.from_numpy(np.array(self.validation_data.images))  # a writable copy of the memory map
        try:
            result = evaluate_images(images, reference, args.eval_batch_size, str(self.accelerator.device), reference_range="uint8",
                                     seed=args.seed, inception_weights=args.inception_weights)
        except ValueError as error:  # e.g. a diverged model's samples: report it, keep training
            self.accelerator.print(f"epoch {epoch}: sample evaluation skipped: {error}")
            return
        metrics = {f"eval/{name}": value for name, value in result.items() if isinstance(value, float)}
        self.metrics.log({"epoch": epoch, **metrics}, self.global_step)
        self.accelerator.print(f"epoch {epoch}: {summary_line(result)}")
        for note in result["notes"]:
            self.accelerator.print(f"  note: {note}")

    def save_pipeline(self, folder: Path | None = None) -> None:
        """The (EMA) pipeline into the run folder, or a snapshot of it into `folder` (not the run's pipeline)."""
        self._with_ema_weights(lambda model: save_pipeline(self._pipeline(model), folder or self.output_dir))
        if folder is None:
            self.pipeline_step = self.global_step

    # -- the loop ----------------------------------------------------------------------------------------------

    def _announce_start(self) -> None:
        accelerator, args = self.accelerator, self.args
        epochs = self.max_train_steps / self.steps_per_epoch
        accelerator.print(
            f"Training {args.model_config_name_or_path or args.model} on {len(self.train_data)} images "
            f"({len(self.validation_data)} held out): {self.max_train_steps} steps ({epochs:.3g} epochs) of batch "
            f"{args.train_batch_size} x {args.gradient_accumulation_steps} accumulation x {accelerator.num_processes} "
            f"process(es), precision {args.mixed_precision}, on {accelerator.device}"
            + (f", {describe_recipe(args)}.\n" if args.recipe else ".\n")
            + f"Writing to {self.output_dir}/: checkpoints every {args.checkpointing_steps} steps"
            + (f" (and {args.checkpointing_minutes:g} minutes after the last one)" if args.checkpointing_minutes else "")
            + f", sample grids every "
            f"{args.save_images_epochs} epoch(s) in samples/, the pipeline at the end"
            + (f", starting from step {self.global_step}." if self.global_step else ".")
        )

    def train(self, after_step=None) -> None:
        """Train to the last step, then save the pipeline (and upload it with --push_to_hub).

        `after_step(trainer)`, if given, runs after every step (benchmarks/time_to_quality.py scores samples there);
        it may end training early by lowering `trainer.max_train_steps`.
        """
        accelerator, args = self.accelerator, self.args
        self._announce_start()
        progress = tqdm(total=self.max_train_steps, initial=self.global_step, disable=not accelerator.is_local_main_process, desc="train")
        with quiet_tensorboard_writer():
            try:
                with (self.signals, self._stop_if_unwritable(),
                      self.signals.abandoning_steps(self.eager_model) if self.abandons_steps else nullcontext()):
                    self._train_steps(progress, after_step)
            except TrainingStopped:
                with suppress(OSError):  # trackers that cannot flush into a deleted folder: the stop says why
                    accelerator.end_training()
                raise
            finally:
                progress.close()  # so that a message that follows starts on a line of its own
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                with self._stop_if_unwritable():
                    if self.pipeline_step != self.global_step:
                        # Resumed from the last step's checkpoint (the run ended before or while writing the pipeline),
                        # or ended early by `after_step`.
                        self.save_pipeline()
                    upload = prepare_upload(self.output_dir, args.hub_model_id or self.output_dir.name)
                if args.push_to_hub:
                    accelerator.print(f"Uploaded to https://huggingface.co/{push(upload, args.hub_token, args.hub_private_repo)}")
                accelerator.print(
                    f"Done: the pipeline is in {self.output_dir}/. Sample from it with\n"
                    f"  diffusion-lab sample {self.output_dir} --num_images 64"
                )
            accelerator.end_training()

    def _stop_if_unwritable(self):
        return stop_if_unwritable(self.output_dir, last_checkpoint_name, self.folder_watch, lambda: self.global_step)

    def _train_steps(self, progress, after_step=None) -> None:
        accelerator, args = self.accelerator, self.args
        epoch_loss_sum = torch.zeros((), device=accelerator.device)
        losses_in_epoch = 0  # counted, not derived: a resumed run starts mid-epoch, skipped steps do not count
        window_loss_sum = torch.zeros((), device=accelerator.device)
        losses_in_window = 0
        steps_in_window = 0  # timed steps: the compiling first step is timed on its own
        compiling = args.torch_compile
        capturing = isinstance(self.step, GraphedTrainingStep) and self.step.capture
        window_start = time.perf_counter()
        last_checkpoint_time = time.monotonic()  # --checkpointing_minutes: host time only, no device sync
        while self.global_step < self.max_train_steps:
            before = self._state_before_step() if self.abandons_steps else None
            try:
                with self.signals.step():
                    loss, skipped = self.step(self.global_step)
            except StepAbandoned:
                self._abandon_step(before)
            self.global_step += 1
            if self.guides is not None:
                self.guides.take(self.global_step, self._guide_weights)
            steps_in_window += 1
            if compiling:
                compiling, steps_in_window = False, 0
                window_start = self._report_compile_time(loss, window_start)
            if capturing and self.step.capture_seconds is not None:
                capturing, steps_in_window = False, 0
                self.metrics.log({"cuda_graph_capture_seconds": self.step.capture_seconds}, self.global_step)
                accelerator.print(f"--cuda_graph: the step was captured in {self.step.capture_seconds:.1f} s (step {self.global_step}).")
                window_start = time.perf_counter()
            progress.update(1)
            step, epoch = self.global_step, math.ceil(self.global_step / self.steps_per_epoch)
            if skipped:
                accelerator.print(f"step {step}: non-finite loss, update skipped (--skip_nonfinite)")
            else:
                epoch_loss_sum += loss
                losses_in_epoch += 1
                window_loss_sum += loss
                losses_in_window += 1
            logging_due = step % args.logging_steps == 0 or step == self.max_train_steps
            epoch_ends = step % self.steps_per_epoch == 0 or step == self.max_train_steps
            stop_signal, checkpoint_time, folder_changed = self._agreed_requests(
                args.checkpointing_minutes > 0 and time.monotonic() - last_checkpoint_time >= 60 * args.checkpointing_minutes)
            if folder_changed:  # checked before anything of this step is written
                raise self.folder_watch.stop(step, last_checkpoint_name)
            checkpoint_due = step % args.checkpointing_steps == 0 or (args.keep_epoch_checkpoints and epoch_ends) or checkpoint_time
            if logging_due or checkpoint_due or epoch_ends or stop_signal:
                self._stop_if_nonfinite()
            if logging_due:
                # The host-device syncs of the loop happen here, every --logging_steps steps.
                # NaN when every step of the window was skipped (--skip_nonfinite).
                mean_loss = accelerator.reduce(window_loss_sum, reduction="mean").item() / losses_in_window if losses_in_window else math.nan
                values = {"epoch": epoch, "loss": mean_loss, "lr": self.lr_scheduler.get_last_lr()[0]}
                if steps_in_window:
                    values["steps_per_second"] = steps_in_window / (time.perf_counter() - window_start)
                if self.ema is not None:
                    values["ema_decay"] = self.ema.cur_decay_value
                self.metrics.log(values, step)
                progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{values['lr']:.2e}")
                window_loss_sum.zero_()
                losses_in_window = steps_in_window = 0
                window_start = time.perf_counter()
            checkpoint = None
            if checkpoint_due or stop_signal:
                checkpoint = save_checkpoint(accelerator, self.output_dir, step, args.checkpoints_total_limit, config=self.run_config,
                                             kept_steps=self._kept_checkpoint_steps)
                last_checkpoint_time = time.monotonic()
            if epoch_ends and not stop_signal:
                train_loss = accelerator.reduce(epoch_loss_sum, reduction="mean").item() / losses_in_epoch if losses_in_epoch else math.nan
                self.end_of_epoch(epoch, train_loss, final=step == self.max_train_steps)
                epoch_loss_sum.zero_()
                losses_in_epoch = 0
                # A signal during the epoch's validation, grids or evaluation stops the run here.
                stop_signal = self._agreed_requests()[0]
                if stop_signal and checkpoint is None:
                    checkpoint = save_checkpoint(accelerator, self.output_dir, step, args.checkpoints_total_limit,
                                                 config=self.run_config, kept_steps=self._kept_checkpoint_steps)
            if stop_signal:
                raise TrainingStopped(
                    f"{signal.Signals(stop_signal).name} received: stopped after step {step} and wrote {checkpoint.name}; "
                    f"to go on, {RESUME_HINT}.",
                    exit_code=128 + stop_signal,
                )
            if after_step is not None:
                after_step(self)

    def _state_before_step(self) -> tuple:
        """What a step changes before its optimizer update (random draws, accumulation counters, the objective's
        statistics), for `_abandon_step` to put back; host-side copies only, no device sync."""
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        return (random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda_rng, self.accelerator.step,
                self.lr_scheduler.state_dict(), self.objective.state_dict())

    def _abandon_step(self, before: tuple) -> None:
        """A stop signal came during the forward or backward pass of step N + 1: put back what the step changed (the
        weights, optimizer and EMA change only in the update, which it did not reach) and write checkpoint-N at once
        (unless it exists), the checkpoint an uninterrupted run writes after step N; then stop."""
        python_rng, numpy_rng, torch_rng, cuda_rng, accumulation_step, lr_schedule, objective_state = before
        random.setstate(python_rng)
        np.random.set_state(numpy_rng)
        torch.set_rng_state(torch_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        self.accelerator.step = accumulation_step
        self.lr_scheduler.load_state_dict(lr_schedule)
        if objective_state:
            self.objective.load_state_dict(objective_state)
        self.optimizer.zero_grad(set_to_none=True)
        self._stop_if_nonfinite()
        step, signum = self.global_step, self.signals.received
        if not (self.output_dir / f"checkpoint-{step}").is_dir():
            save_checkpoint(self.accelerator, self.output_dir, step, self.args.checkpoints_total_limit, config=self.run_config,
                            kept_steps=self._kept_checkpoint_steps)
        raise TrainingStopped(
            f"{signal.Signals(signum).name} received during step {step + 1}: gave that step up; checkpoint-{step} holds "
            f"the run after step {step}; to go on, {RESUME_HINT}.",
            exit_code=128 + signum,
        )

    def _report_compile_time(self, loss: torch.Tensor, start: float) -> float:
        """Log the first step's time, torch.compile's compilation included, as compile_seconds; returns when it ended."""
        loss.item()  # waits for the step: a one-off sync, not one per step
        seconds = time.perf_counter() - start
        self.metrics.log({"compile_seconds": seconds}, self.global_step)
        self.accelerator.print(f"torch.compile ({self.args.torch_compile_mode}): the first step took {seconds:.1f} s, compilation included.")
        return time.perf_counter()

    def end_of_epoch(self, epoch: int, train_loss: float, final: bool) -> None:
        """Validation loss, then (main process) the sample grid, evaluation and pipeline as due.

        A stop signal skips the grid and evaluation (even halfway through drawing them) but not the pipeline at the
        end of training, which takes a second: a stopped run that had finished training still leaves its pipeline.
        """
        accelerator, args = self.accelerator, self.args
        self.metrics.log({"epoch": epoch, "train_loss": train_loss, "val_loss": self.validation_loss()}, self.global_step)
        if accelerator.is_main_process:
            try:
                if (epoch % args.save_images_epochs == 0 or final) and not self.signals.received:
                    self.save_sample_grid(f"epoch_{epoch:04d}")
                if args.eval_every_epochs and (epoch % args.eval_every_epochs == 0 or final) and not self.signals.received:
                    self.evaluate_samples(epoch)
            except SamplingStopped:
                accelerator.print(f"{signal.Signals(self.signals.received).name} received: sampling abandoned.")
            if epoch % args.save_model_epochs == 0 or final:
                self.save_pipeline()
        accelerator.wait_for_everyone()


def run_training(args: argparse.Namespace, objective: Objective, argv: list[str]) -> Trainer:
    """Train with `args`; `argv`, the command as parsed (its first word the script), is recorded in training_args.json."""
    validate_training_args(args)
    trainer = Trainer(args, objective, argv)
    try:
        trainer.train()
    finally:
        trainer.release_run_folder()
    return trainer
