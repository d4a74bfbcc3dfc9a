"""Checkpoints: what goes into them (safetensors weights, the EMA, the objective's state), and their folders:
atomic writes, `latest`, pruning.

A checkpoint is written to `checkpoint-<step>.tmp` and renamed to `checkpoint-<step>` only once complete, so a
folder with the final name is always whole and a run killed mid-write leaves only a `.tmp` to ignore (and to
remove at the next save).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file

from ..staging import staging_folder
from .autoguidance import GuideSnapshots
from .objective import Objective

OBJECTIVE_STATE_FILE = "objective.safetensors"  # what the objective learns besides the model (its state_dict)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# Written by accelerator.save_state (with our hook for the model); a checkpoint lacking one cannot resume exactly.
CHECKPOINT_FILES = ("model/config.json", "optimizer.bin", "scheduler.bin", "random_states_0.pkl")


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in output_dir.iterdir() if (match := CHECKPOINT_PATTERN.match(path.name)) and path.is_dir()]
    return [path for _, path in sorted(found)]


def last_checkpoint_name(output_dir: Path) -> str | None:
    checkpoints = complete_checkpoints(output_dir)
    return checkpoints[-1].name if checkpoints else None


def resolve_resume_path(output_dir: Path, resume_from_checkpoint: str) -> Path:
    """The checkpoint folder `--resume_from_checkpoint` names ('latest' or a path)."""
    if resume_from_checkpoint == "latest":
        checkpoints = complete_checkpoints(output_dir)
        if not checkpoints:
            raise FileNotFoundError(
                f"no complete checkpoint in {output_dir}: to start afresh, drop --resume_from_checkpoint "
                "(add --overwrite_output_dir if the folder holds the start of a run)."
            )
        path = checkpoints[-1]
    else:
        path = Path(resume_from_checkpoint)
        if not CHECKPOINT_PATTERN.match(path.name) or not path.is_dir():
            raise FileNotFoundError(f"{path} is not a complete checkpoint folder: pass 'latest' or an existing checkpoint-<step> folder.")
    missing = [name for name in CHECKPOINT_FILES if not (path / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"checkpoint {path} is damaged (missing {', '.join(missing)}): pass an earlier checkpoint-<step> folder "
            "to --resume_from_checkpoint, or delete this one to make the previous one 'latest'."
        )
    return path


MANIFEST_NAME = "manifest.json"
CONFIG_NAME = "run_config.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """Size and SHA-256 of every file of a checkpoint, written last (once every process has written its files)."""
    files = {str(path.relative_to(folder)): {"size": path.stat().st_size, "sha256": _sha256(path)}
             for path in sorted(folder.rglob("*")) if path.is_file() and path.name != MANIFEST_NAME}
    (folder / MANIFEST_NAME).write_text(json.dumps({"files": files}, indent=1) + "\n")


def verify_manifest(checkpoint: Path) -> bool:
    """Check every file of `checkpoint` against its manifest; False for a checkpoint written before manifests."""
    path = checkpoint / MANIFEST_NAME
    if not path.exists():
        return False
    hint = ("pass an earlier checkpoint-<step> folder to --resume_from_checkpoint, or delete this one to make the "
            "previous one 'latest'.")
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise FileNotFoundError(f"checkpoint {checkpoint} is damaged (its {MANIFEST_NAME} is unreadable): {hint}") from None
    for name, expected in files.items():
        file = checkpoint / name
        if not file.is_file():
            problem = f"missing {name}"
        elif file.stat().st_size != expected["size"]:
            problem = f"{name} has {file.stat().st_size} bytes, {expected['size']} were written"
        elif _sha256(file) != expected["sha256"]:
            problem = f"{name} differs from what was written"
        else:
            continue
        raise FileNotFoundError(f"checkpoint {checkpoint} is damaged ({problem}): {hint}")
    return True


# Flags a resumed run may change: how long it runs, what it logs, saves, evaluates and uploads, and the remedies the
# non-finite-loss message offers. Every other flag (model, data, schedule, T, prediction type, degradation, batch
# size, accumulation, seed, optimizer, learning rate, precision, ...) must be what the checkpoint was trained with.
CHANGEABLE_ON_RESUME = {
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "max_train_steps", "num_epochs", "logging_steps",
    "save_images_epochs", "save_model_epochs", "num_inference_steps", "checkpointing_steps", "checkpoints_total_limit",
    "keep_epoch_checkpoints", "inception_weights",
    "eval_every_epochs", "eval_num_samples", "eval_batch_size", "logger", "push_to_hub", "hub_model_id",
    "hub_private_repo", "debug", "skip_nonfinite", "max_grad_norm", "torch_compile", "allow_tf32", "deterministic",
    "noise", "data_on_device", "torch_compile_mode", "channels_last", "allow_unchecked_resume", "checkpointing_minutes",
}


def check_same_run(checkpoint: Path, config: dict) -> bool:
    """Refuse to resume `checkpoint` with settings other than those it was trained with, naming each one that
    differs; False for a checkpoint written before settings were recorded (nothing to compare)."""
    path = checkpoint / CONFIG_NAME
    if not path.exists():
        return False
    recorded = json.loads(path.read_text())
    if recorded.get("objective", config.get("objective")) != config.get("objective"):
        raise ValueError(
            f"{checkpoint.name} was written by a {recorded['objective']} run (train_"
            f"{'cold' if 'Cold' in recorded['objective'] else 'ddpm'}.py), this is a {config.get('objective')} run: "
            "resume it with the script that wrote it, or start a new run in another --output_dir."
        )
    differing = _differences(recorded, ((name, value) for name, value in config.items() if name not in CHANGEABLE_ON_RESUME), "--")
    if differing:
        raise ValueError(
            f"{checkpoint.name} was trained with other settings: {', '.join(differing)}: resume with the checkpoint's "
            "values, or start a new run (another --output_dir, or --overwrite_output_dir)."
        )
    return True


def check_resumable(checkpoint: Path, config: dict, allow_unchecked: bool) -> str | None:
    """Verify `checkpoint`'s files against its manifest and its settings against this run's `config`.

    A checkpoint without its manifest or its recorded settings (an older diffusion-lab's, or one whose files were
    deleted) cannot be checked: refused, unless `allow_unchecked` (--allow_unchecked_resume); then the warning to print
    is returned."""
    lacking = [name for name, checked in ((MANIFEST_NAME, verify_manifest(checkpoint)), (CONFIG_NAME, check_same_run(checkpoint, config)))
               if not checked]
    if not lacking:
        return None
    what = " and no ".join(lacking)
    if not allow_unchecked:
        raise ValueError(
            f"{checkpoint} has no {what}, so neither its files nor its settings can be checked against this run: resume "
            "from a checkpoint that has them, or pass --allow_unchecked_resume to resume this one unchecked."
        )
    return f"warning: {checkpoint.name} has no {what}: resuming it unchecked (--allow_unchecked_resume)."


def check_same_model(checkpoint: Path, model) -> None:
    """Refuse, naming each difference, to resume `checkpoint` into a model built otherwise than the one it saved: a
    preset that changed between versions (unet_small lost its middle-block attention on 2026-12-05) would otherwise
    fail in load_state_dict, or load part of the weights."""
    path = checkpoint / "model" / "config.json"
    if not path.is_file():
        return  # the manifest check names missing files
    saved = json.loads(path.read_text())
    differing = _differences(saved, ((name, value) for name, value in model.config.items() if not name.startswith("_")))
    if differing:
        raise ValueError(
            f"{checkpoint.name}'s model is not the one this run builds: {', '.join(differing)}: resume it with the "
            "diffusion-lab version that wrote it, or start a new run in another --output_dir."
        )


def _differences(recorded: dict, current, prefix: str = "") -> list[str]:
    """'<prefix>name recorded (this run: current)' for each (name, value) of `current` that `recorded` holds otherwise;
    a name it does not record (a setting added since) is not compared."""
    return [f"{prefix}{name} {_shown(recorded[name])} (this run: {_shown(value)})"
            for name, value in current if name in recorded and _comparable(recorded[name]) != _comparable(value)]


def _comparable(value):
    return list(value) if isinstance(value, tuple) else value


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return "(not given)" if value is None else str(value)


def step_of(checkpoint: Path) -> int:
    return int(CHECKPOINT_PATTERN.match(checkpoint.name).group(1))


def prune_checkpoints(output_dir: Path, keep: int | None, newest: Path, kept_steps=None) -> None:
    """Keep `newest` (the checkpoint just written) and the `keep - 1` highest-numbered other complete checkpoints;
    checkpoints whose step `kept_steps(step)` says to keep (--keep_epoch_checkpoints) are never removed nor counted."""
    if keep is None:
        return
    others = [path for path in complete_checkpoints(output_dir)
              if path != newest and not (kept_steps is not None and kept_steps(step_of(path)))]
    for old in others[: max(len(others) - (keep - 1), 0)]:
        shutil.rmtree(old)


def save_checkpoint(accelerator, output_dir: Path, step: int, total_limit: int | None, config: dict | None = None,
                    kept_steps=None) -> Path:
    """`accelerator.save_state` into a temporary folder, then rename it into place (all processes call this).

    `config`, the run's settings, is stored with it (`run_config.json`) so that a resume can check it continues the
    same run; the manifest of sizes and hashes is written last. `kept_steps(step)`: checkpoints pruning must leave
    (see `prune_checkpoints`)."""
    final = output_dir / f"checkpoint-{step}"
    if accelerator.is_main_process:
        for stale in output_dir.glob("checkpoint-*.tmp"):  # left by a run killed mid-write
            shutil.rmtree(stale)
    accelerator.wait_for_everyone()
    with staging_folder(output_dir / f"{final.name}.tmp", final.name, owner=accelerator.is_main_process) as staging:
        accelerator.save_state(str(staging))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if config is not None:
                (staging / CONFIG_NAME).write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
            write_manifest(staging)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # A step redone after resuming from an earlier checkpoint: the old copy is removed only once replaced.
        replaced = final.rename(output_dir / f"{final.name}.replaced.tmp") if final.exists() else None
        staging.rename(final)
        if replaced is not None:
            shutil.rmtree(replaced)
        prune_checkpoints(output_dir, total_limit, newest=final, kept_steps=kept_steps)
    accelerator.wait_for_everyone()
    return final


def register_checkpoint_hooks(accelerator: Accelerator, ema: EMAModel | None, objective: Objective,
                              guides: GuideSnapshots | None = None) -> None:
    """Store the model (and EMA) in checkpoints as safetensors instead of accelerate's pickled default.

    What an objective learns besides the model (its `state_dict`, e.g. cold diffusion's start statistics) goes into
    the checkpoint too, as `objective.safetensors`, and so do the autoguidance snapshots (`guides`).
    """
    keeps_state = bool(objective.state_dict())

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            if keeps_state:
                save_file(objective.state_dict(), Path(output_dir) / OBJECTIVE_STATE_FILE)
            if guides is not None:
                guides.save(output_dir)
            if ema is not None:
                # EMAModel.save_pretrained builds a model, whose random init would draw from the training RNG and
                # make the weights depend on when checkpoints are written.
                with torch.random.fork_rng(devices=[]):
                    ema.save_pretrained(Path(output_dir) / "model_ema")
            for model in models:
                accelerator.unwrap_model(model, keep_torch_compile=False).save_pretrained(Path(output_dir) / "model", safe_serialization=True)
                weights.pop()

    def load_hook(models, input_dir):
        if keeps_state:
            objective.load_state_dict(load_file(Path(input_dir) / OBJECTIVE_STATE_FILE))
        if guides is not None:
            guides.load(input_dir, accelerator.device)
        if ema is not None:
            # EMAModel.from_pretrained would pass the EMA's settings, stored in the same config.json, to the model class
            # (a warning naming each), take the config's path for a config (a FutureWarning) and fall back to a pickled
            # .bin: the settings and the safetensors weights are read here instead.
            path = Path(input_dir) / "model_ema"
            weights_file = path / "diffusion_pytorch_model.safetensors"
            if not weights_file.is_file():
                raise FileNotFoundError(
                    f"{path} holds no usable safetensors weights (no {weights_file.name}); pickled weights are never "
                    "read: pass an earlier checkpoint-<step> folder to --resume_from_checkpoint."
                )
            config = json.loads((path / "config.json").read_text())
            settings = {name: config[name] for name in ema.state_dict() if name != "shadow_params" and name in config}
            weights = load_file(weights_file)
            model = accelerator.unwrap_model(models[0], keep_torch_compile=False)
            ema.load_state_dict({**settings, "shadow_params": [weights[name] for name, _ in model.named_parameters()]})
            ema.to(accelerator.device)
        while models:
            model = accelerator.unwrap_model(models.pop(), keep_torch_compile=False)
            saved = type(model).from_pretrained(input_dir, subfolder="model", use_safetensors=True)
            model.load_state_dict(saved.state_dict())

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
