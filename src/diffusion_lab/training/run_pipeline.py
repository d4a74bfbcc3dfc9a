"""The pipeline of a run folder our trainer wrote, also when the run stopped before writing one: then it is built
from the latest complete checkpoint, as the trainer would have built it (`Objective.pipeline`), with the EMA
weights where the run kept an EMA."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import load_file

from ..pipelines.export import load_model, load_pipeline
from ..run_files import TRAINING_ARGS_FILE
from .arguments import add_training_args
from .autoguidance import GuideSnapshots, guide_model
from .checkpoints import CHECKPOINT_PATTERN, CONFIG_NAME, OBJECTIVE_STATE_FILE, complete_checkpoints, step_of
from .cold_objective import ColdObjective, add_cold_args
from .ddpm_objective import DDPMObjective, add_ddpm_args

# Each objective a checkpoint may name, with the flags of its script.
OBJECTIVES = {"DDPMObjective": (DDPMObjective, add_ddpm_args), "ColdObjective": (ColdObjective, add_cold_args)}


def recorded_args(config: dict, add_objective_args) -> argparse.Namespace:
    """The flags a checkpoint recorded, over the trainer's defaults (a flag added since the checkpoint was written)."""
    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_training_args(parser)
    add_objective_args(parser)
    return argparse.Namespace(**{**vars(parser.parse_args([])), **config})


def without_ema_settings(model):
    """`model` without the settings EMAModel.save_pretrained writes into a checkpoint's `model_ema/config.json` (decay,
    power ...), which diffusers keeps in the loaded model's config: they would go into every pipeline saved from it
    and be warned about on each load. The same tensors; built on the meta device, so nothing is initialised."""
    from accelerate import init_empty_weights

    init_dict, _, _ = type(model).extract_init_dict(dict(model.config))
    with init_empty_weights():
        clean = type(model).from_config(init_dict)
    clean.load_state_dict(model.state_dict(), assign=True)
    return clean.eval()


def pipeline_from_checkpoint(checkpoint: Path):
    """The pipeline of `checkpoint` (a `checkpoint-<step>` folder): the objective and its settings from the
    checkpoint's run_config.json, the model (its EMA copy where there is one) from safetensors, checked as a saved
    pipeline's are, and the autoguidance guide the run had at that step. Returns (pipeline, whether the EMA weights were used)."""
    try:
        config = json.loads((checkpoint / CONFIG_NAME).read_text())
        objective_class, add_objective_args = OBJECTIVES[config["objective"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise FileNotFoundError(
            f"{checkpoint} records no usable run settings ({CONFIG_NAME}): resume the run with --resume_from_checkpoint "
            "latest to write its pipeline."
        ) from None
    args = recorded_args(config, add_objective_args)
    objective = objective_class.from_args(args)
    ema = (checkpoint / "model_ema").is_dir()
    model = without_ema_settings(load_model(checkpoint, "model_ema")) if ema else load_model(checkpoint, "model")
    if args.class_conditional:
        # Checkpoints do not record the class names: the classes are numbered, as --class_labels takes them.
        objective.use_classes([str(index) for index in range(model.config.num_class_embeds - 1)], args.label_dropout)
    if (checkpoint / OBJECTIVE_STATE_FILE).is_file():
        objective.load_state_dict(load_file(checkpoint / OBJECTIVE_STATE_FILE))
    if objective.autoguidance:
        guides = GuideSnapshots(objective.autoguidance[1])
        guides.load(checkpoint)
        weights = guides.guide_for(step_of(checkpoint))
        if weights is not None:
            return objective.pipeline(model, guide_model(model, weights)), ema
    return objective.pipeline(model), ema


def _is_checkpoint(folder: Path) -> bool:
    return bool(CHECKPOINT_PATTERN.match(folder.name)) and (folder / CONFIG_NAME).is_file()


def is_run_without_pipeline(folder: Path) -> bool:
    """A checkpoint folder, or a run folder of our trainer that holds no pipeline (yet): it stopped before writing
    one, or while saving it."""
    if _is_checkpoint(folder):
        return True
    return folder.is_dir() and not (folder / "model_index.json").is_file() and (
        (folder / TRAINING_ARGS_FILE).is_file() or bool(complete_checkpoints(folder)))


def load_run_pipeline(path_or_id: str, trust_remote_code: bool = False):
    """`load_pipeline`, and for a run that stopped before writing its pipeline (or a `checkpoint-<step>` folder given
    itself) the pipeline of its latest complete checkpoint, saying which in one line."""
    folder = Path(path_or_id)
    if not is_run_without_pipeline(folder):
        return load_pipeline(path_or_id, trust_remote_code=trust_remote_code)
    checkpoints = [folder] if _is_checkpoint(folder) else complete_checkpoints(folder)
    if not checkpoints:
        raise FileNotFoundError(
            f"{folder} holds a run that stopped before its first checkpoint, so there is no model to use yet: rerun "
            "the training with --overwrite_output_dir (and a smaller --checkpointing_steps to keep something sooner)."
        )
    checkpoint = checkpoints[-1]
    pipeline, ema = pipeline_from_checkpoint(checkpoint)
    source = f"sampling from {checkpoint}" if checkpoint == folder else f"{folder} holds no pipeline: sampling from {checkpoint.name}"
    print(f"{source}, with its {'EMA weights' if ema else 'weights (the run kept no EMA)'}.", flush=True)
    return pipeline
