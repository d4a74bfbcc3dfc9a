"""Model cards and Hub uploads for saved pipelines.

The upload is built first (which files, which card) and sent second, so that what would be uploaded can be
checked without a network. The token is passed straight to huggingface_hub and never printed or stored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData

from .run_files import RecordFilter, read_metrics, read_training_args

# Run artefacts that stay local: resumable state, logs, intermediate grids, temporary folders.
NOT_UPLOADED = ("checkpoint-*", "checkpoint-*/**", "logs/**", "samples/**", "*.tmp", "**/*.tmp/**", ".*")

CARD_TEMPLATE = """---
{card_data}
---

# {title}

{description}

![samples](sample_grid.png)

## Use

```python
from diffusers import DiffusionPipeline

pipeline = DiffusionPipeline.from_pretrained("{repo_id}"{remote_code})
images = pipeline({call_arguments}).images
```
{remote_code_note}
## Training

Trained with diffusion-lab:

```bash
{command}
```

| hyper-parameter | value |
|---|---|
{hyperparameters}

## Metrics

{metrics}
"""

CARD_HYPERPARAMETERS = (
    "model", "dataset_name", "max_train_samples", "train_images", "resolution", "num_processes", "train_batch_size",
    "gradient_accumulation_steps", "learning_rate", "lr_scheduler", "optimizer", "loss", "max_train_steps", "num_epochs",
    "steps_per_epoch", "use_ema", "ema_max_decay", "mixed_precision",
    "ddpm_num_steps", "ddpm_beta_schedule", "noise_schedule", "beta_start", "beta_end", "prediction_type", "variance_type",
    "degradation", "seed",
)


@dataclass
class Upload:
    repo_id: str
    folder: Path
    card: str
    ignore_patterns: tuple[str, ...] = NOT_UPLOADED


def _needs_remote_code(index: dict) -> bool:
    return any(isinstance(value, list) and value[0] not in ("diffusers", None) for value in index.values())


def model_card(folder: Path, repo_id: str) -> str:
    info = read_training_args(folder)
    # What the run actually did (steps, epochs, images, precision) over the flags as given.
    args = {**info["args"], **info["run"]}
    index = json.loads((folder / "model_index.json").read_text())
    remote = _needs_remote_code(index)
    classes = index.get("class_names")  # a class-conditional pipeline's classes; None for unconditional ones
    autoguided = bool(index.get("guide_unet")) and index["guide_unet"][0] is not None  # a cluster pipeline may have none
    clusters = index.get("cluster_sizes")  # a cluster-conditional pipeline's cluster shares
    dataset = args.get("dataset_name") or "ylecun/mnist"
    dataset = Path(dataset).name if Path(dataset).is_absolute() else dataset
    # The last value of every metric (evaluation metrics included, when present), not the bookkeeping.
    metrics = read_metrics(folder, missing_ok=True).latest(leave_out=("lr", "steps_per_second"))
    numbers = {key: value for key, value in metrics.items() if isinstance(value, (int, float)) and math.isfinite(value)}
    card_data = ModelCardData(
        library_name="diffusers", license="apache-2.0", datasets=[dataset], pipeline_tag="unconditional-image-generation",
        tags=["diffusers", "unconditional-image-generation", "diffusion-lab", "cold-diffusion" if args.get("degradation") else "ddpm",
              *(["class-conditional", "classifier-free-guidance"] if classes else []), *(["autoguidance"] if autoguided else []), *(["cluster-conditioning"] if clusters else [])],
        model_name=repo_id.split("/")[-1] if numbers else None,
        eval_results=[
            EvalResult(task_type="unconditional-image-generation", dataset_type=dataset, dataset_name=dataset,
                       metric_type=key, metric_value=value, metric_name=key)
            for key, value in numbers.items()
        ] or None,
    )
    rows = "\n".join(f"| {key} | {args[key]} |" for key in CARD_HYPERPARAMETERS if args.get(key) is not None)
    if "/" not in repo_id:  # not uploaded: the snippet shows where the namespace goes
        repo_id = f"your-name/{repo_id}"
    card = CARD_TEMPLATE.format(
        card_data=card_data.to_yaml(),
        title=repo_id.split("/")[-1],
        description=(
            f"A class-conditional image diffusion pipeline (classes {', '.join(classes)}; classifier-free guidance: "
            "`guidance_scale` 1 is the plain conditional model, 0 the unconditional one) trained with diffusion-lab."
            if classes else "An unconditional image diffusion pipeline trained with diffusion-lab"
            + (f", conditioned on {len(clusters)} k-means clusters of its training images' pixels (each image's cluster "
               "is drawn by the clusters' sizes, a batch holding each cluster in proportion; `cluster_draws=\"iid\"` draws "
               "them independently; for a set made in several calls, `pipeline.draw_cluster_labels(N, generator)` draws "
               "the clusters of all N and each call takes its slice as `class_labels`)" if clusters else "")
            + (f", autoguided (Karras et al. 2024): `guide_unet`, the same run's EMA weights from earlier in training, "
               f"guides `unet` at w = {index['guidance_scale']:g} (`guidance_scale` 1 is `unet` alone)." if autoguided else ".")
        ),
        repo_id=repo_id,
        call_arguments=f"class_labels={len(classes) - 1}, batch_size=16, guidance_scale=3" if classes else "batch_size=16",
        remote_code=", trust_remote_code=True" if remote else "",
        remote_code_note=(
            "\nThis pipeline uses classes of diffusion-lab whose code is stored in this repository (`*.py` next to the "
            "weights); `trust_remote_code=True` runs that code. With diffusion-lab installed (from its source), "
            "`diffusion_lab.load_pipeline(repo_id)` loads it without running downloaded code.\n"
            if remote else ""
        ),
        command=info["command"],
        hyperparameters=rows,
        metrics="\n".join(f"- {key}: {value:.4g}" for key, value in metrics.items() if isinstance(value, (int, float))) or "Not measured.",
    )
    return RecordFilter(None).hide(card)  # no token value (environment, stored login) even in a repo id typed by mistake


def prepare_upload(folder: str | Path, repo_id: str) -> Upload:
    """Write README.md (the model card) into the pipeline folder and describe what goes to the Hub."""
    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{folder} holds no saved pipeline (model_index.json): train first or pass the pipeline folder.")
    grids = sorted((folder / "samples").glob("*.png"))
    if grids:
        (folder / "sample_grid.png").write_bytes(grids[-1].read_bytes())
    card = model_card(folder, repo_id)
    (folder / "README.md").write_text(card)
    return Upload(repo_id=repo_id, folder=folder, card=card)


class HubError(OSError):
    """The Hub cannot be reached or written; the message says what is intact and what to do."""


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:160]}" if text else type(error).__name__


def check_hub_access(repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Before training: a token is present and the repository exists or can be created, and is ours to write (as
    diffusers' example does with create_repo up front). Returns the full repo id (with its namespace)."""
    import huggingface_hub
    from huggingface_hub import constants, create_repo

    if constants.HF_HUB_OFFLINE:
        raise HubError("--push_to_hub cannot upload with HF_HUB_OFFLINE=1 set: unset it, or drop --push_to_hub and upload the pipeline later.")
    if not (token or huggingface_hub.get_token()):
        raise HubError("--push_to_hub needs a Hugging Face token: run `hf auth login` (or set HF_TOKEN) and rerun.")
    try:
        return create_repo(repo_id, token=token, private=private, exist_ok=True).repo_id
    except Exception as error:  # network down, no write access, invalid id ...
        raise HubError(
            f"cannot create or reach the Hub repository {repo_id} ({_reason(error)}): check the id, the network and "
            "that your token may write there (`hf auth whoami`), or drop --push_to_hub. Nothing was trained yet."
        ) from None


def upload_command(upload: Upload) -> str:
    """The command that uploads a finished pipeline folder later, with the same files left out."""
    excludes = " ".join(f"--exclude '{pattern}'" for pattern in upload.ignore_patterns)
    return f"hf upload {upload.repo_id} {upload.folder} . {excludes}"


def push(upload: Upload, token: str | None = None, private: bool = False) -> str:
    from huggingface_hub import create_repo, upload_folder

    try:
        repo = create_repo(upload.repo_id, token=token, private=private, exist_ok=True)
        upload_folder(repo_id=repo.repo_id, folder_path=upload.folder, token=token, ignore_patterns=list(upload.ignore_patterns),
                      commit_message="Upload pipeline trained with diffusion-lab")
    except Exception as error:  # one line, not the connection tracebacks
        raise HubError(
            f"the upload to {upload.repo_id} failed ({_reason(error)}); the pipeline in {upload.folder} is complete. "
            f"Upload it later with: {upload_command(upload)}"
        ) from None
    return repo.repo_id
