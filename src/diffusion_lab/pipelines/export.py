"""Save pipelines so that they load anywhere: safetensors, plus the code of our own classes.

Components whose class is defined in diffusion_lab get their source file copied next to their weights and
`model_index.json` names that file, which is the layout diffusers loads with `trust_remote_code=True`; a pipeline
class of ours has its file copied to the top of the folder and named in `_class_name` likewise.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

from ..staging import staging_folder


def _is_ours(obj) -> bool:
    return type(obj).__module__.startswith("diffusion_lab.")


def _copy_source(cls: type, folder: Path) -> str:
    """Copy the file defining `cls`, and the sibling files it imports relatively, into `folder`; returns its stem."""
    source = Path(inspect.getsourcefile(cls))
    folder.mkdir(parents=True, exist_ok=True)
    pending, copied = [source.stem], set()
    while pending:
        stem = pending.pop()
        if stem not in copied:
            copied.add(stem)
            text = (source.parent / f"{stem}.py").read_text()
            (folder / f"{stem}.py").write_text(text)
            pending += re.findall(r"^from \.(\w+) import", text, flags=re.MULTILINE)
    return source.stem


STAGING_NAME = ".pipeline.tmp"


def save_pipeline(pipeline, output_dir: str | os.PathLike) -> None:
    """`save_pretrained` (safetensors) into `output_dir`, replacing the previous pipeline there as a whole.

    The new pipeline is first written completely into `.pipeline.tmp` (a full disk stops here, the old pipeline
    untouched). Then `model_index.json` is removed, the components are moved in and the new `model_index.json`
    goes last: a run killed during the swap leaves a folder that refuses to load, never one that mixes old and
    new parts; resuming the run writes the pipeline again.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / STAGING_NAME
    if tmp.exists():  # left by a run killed while saving
        shutil.rmtree(tmp)
    with staging_folder(tmp, f"the pipeline in {output_dir}"):
        pipeline.save_pretrained(tmp, safe_serialization=True)
    index = json.loads((tmp / "model_index.json").read_text())
    if _is_ours(pipeline):
        index["_class_name"] = [_copy_source(type(pipeline), tmp), type(pipeline).__name__]
    for name, component in pipeline.components.items():
        if component is not None and _is_ours(component):
            index[name] = [_copy_source(type(component), tmp / name), type(component).__name__]
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (output_dir / "model_index.json").unlink(missing_ok=True)
    for entry in sorted(tmp.iterdir(), key=lambda path: path.name == "model_index.json"):
        _move_into_place(entry, output_dir / entry.name)
    tmp.rmdir()


def _move_into_place(entry: Path, target: Path) -> None:
    if target.is_dir():
        shutil.rmtree(target)
    os.replace(entry, target)


def _our_class(name: str):
    """A class of ours by name, from the modules whose classes travel as remote code."""
    import importlib

    for module in ("diffusion_lab.models", "diffusion_lab.schedulers", "diffusion_lab.pipelines", "diffusion_lab.degradations"):
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if found is not None:
            return found
    return None


@contextmanager
def diffusers_warnings_off():
    """Inside, diffusers and huggingface_hub log errors only: their warnings (a fetch attempted offline, weights
    filled in at random) would come before our one-line error."""
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import logging as hub_logging

    verbosities = [(logging, logging.get_verbosity()) for logging in (diffusers_logging, hub_logging)]
    for logging, _ in verbosities:
        logging.set_verbosity_error()
    try:
        yield
    finally:
        for logging, verbosity in verbosities:
            logging.set_verbosity(verbosity)


def is_local_path(path_or_id: str) -> bool:
    """Whether `path_or_id` means a local folder rather than a Hub id: it exists, starts with ".", "/" or "~", is no
    valid id of the form owner/name (Hub pipelines always have an owner), or its first part is a local folder."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if Path(path_or_id).exists() or path_or_id.startswith((".", "/", "~")) or "/" not in path_or_id:
        return True
    try:
        validate_repo_id(path_or_id)
    except HFValidationError:
        return True
    return Path(path_or_id).parent.is_dir()


def pipeline_folder(path_or_id: str) -> Path:
    """The local folder of a pipeline: `path_or_id` itself, or its Hub snapshot; a local path that does not exist is
    refused as such, never looked up on the Hub."""
    from huggingface_hub import snapshot_download

    folder = Path(path_or_id)
    if folder.is_dir():
        return folder
    if is_local_path(path_or_id):
        raise FileNotFoundError(f"no such folder: {path_or_id}: check the path (a Hub id is owner/name).")
    try:
        with diffusers_warnings_off():  # the error below says it in one line
            return Path(snapshot_download(path_or_id))
    except Exception as error:  # offline, unknown id, gated repo...
        raise FileNotFoundError(
            f"could not download pipeline {path_or_id!r} from the Hub ({type(error).__name__}): check the id and the "
            "network, or pass a local folder."
        ) from None


def _index_class(entry, key: str, base: type) -> type | None:
    """The class a `model_index.json` entry names (None for an absent optional component), if it is a `base`."""
    import diffusers

    if entry == [None, None]:
        return None
    if isinstance(entry, str):
        entry = ["diffusers", entry]
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) for part in entry)):
        raise ValueError(f"model_index.json has a malformed {key!r} entry {entry!r}: re-save or re-download the pipeline.")
    library, class_name = entry
    found = getattr(diffusers, class_name, None) if library == "diffusers" else _our_class(class_name)
    if not (isinstance(found, type) and issubclass(found, base)):
        raise ValueError(
            f"{key} is a {class_name} ({library}), which diffusion_lab does not know: upgrade diffusion_lab and diffusers, "
            "or load it with DiffusionPipeline.from_pretrained(..., trust_remote_code=True) if you trust its code."
        )
    return found


def _load_component(component_class: type, folder: Path, name: str, torch_dtype=None):
    """One component, weights from safetensors only, refusing weights that do not fit the model exactly; models in
    `torch_dtype` if given."""
    from diffusers import ModelMixin
    from safetensors import SafetensorError

    from .validation import check_betas, check_config, check_weights

    check_config(component_class, folder / name)
    is_model = issubclass(component_class, ModelMixin)
    if is_model:
        check_weights(folder / name)
    try:
        with diffusers_warnings_off():  # the error below says it in one line
            if is_model:
                model, info = component_class.from_pretrained(folder, subfolder=name, use_safetensors=True, output_loading_info=True,
                                                              torch_dtype=torch_dtype)
            else:
                scheduler = component_class.from_pretrained(folder, subfolder=name)
    except (OSError, ValueError, NotImplementedError, SafetensorError) as error:
        reason = (str(error).strip() or type(error).__name__).splitlines()[0].split(". ")[0].rstrip(".")
        raise ValueError(f"cannot load {name} from {folder} ({reason}): re-save or re-download the pipeline.") from None
    if not is_model:
        check_betas(scheduler, folder / name / component_class.config_name)
        return scheduler
    mismatches = {kind: info[kind] for kind in ("missing_keys", "unexpected_keys", "mismatched_keys") if info[kind]}
    if mismatches:
        kind, keys = next(iter(mismatches.items()))
        raise ValueError(
            f"the weights in {folder / name} do not fit {component_class.__name__} ({kind.replace('_', ' ')}: {keys[0]}...): "
            "re-save or re-download the pipeline."
        )
    return model


def load_model(folder: Path, name: str):
    """The model saved with save_pretrained in `folder/name` (e.g. a checkpoint's `model/`), of a class diffusers or
    diffusion_lab defines, loaded and checked as a pipeline's models are."""
    from diffusers import ModelMixin

    try:
        class_name = json.loads((folder / name / "config.json").read_text())["_class_name"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{folder / name / 'config.json'} names no model class (_class_name): re-save the model.") from None
    model_class = _index_class(["diffusion_lab" if _our_class(class_name) else "diffusers", class_name], name, ModelMixin)
    return _load_component(model_class, folder, name)


def load_pipeline(path_or_id: str, torch_dtype=None, trust_remote_code: bool = False, **kwargs):
    """Load a saved pipeline using diffusion_lab's own classes, so no code from the folder is run.

    Weights are read from safetensors only (never pickle) and must fit the model exactly; a damaged folder raises
    a one-line error instead of loading partly random weights. `torch_dtype` (e.g. torch.float16): the models'
    weights dtype (default: as saved); other keyword arguments go to the pipeline's constructor, overriding the
    settings recorded in model_index.json (e.g. class_names). `trust_remote_code`: diffusers' own loader, which runs
    the code the folder carries (its errors in one line too).
    """
    from diffusers import ConfigMixin, DiffusionPipeline, ModelMixin, SchedulerMixin

    folder = pipeline_folder(path_or_id)
    if trust_remote_code:
        try:
            with diffusers_warnings_off():
                return DiffusionPipeline.from_pretrained(folder, trust_remote_code=True, use_safetensors=True, torch_dtype=torch_dtype, **kwargs)
        except Exception as error:  # whatever the folder's own code raises
            reason = (str(error).strip() or type(error).__name__).splitlines()[0]
            raise ValueError(f"cannot load the pipeline in {folder} with its own code ({reason}): re-save or re-download the pipeline.") from None
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        if (folder / STAGING_NAME).is_dir():
            raise FileNotFoundError(
                f"saving the pipeline in {folder} was cut off: resume the run (--resume_from_checkpoint latest) to write it again."
            )
        raise FileNotFoundError(f"{folder} holds no model_index.json: pass a folder written by save_pretrained / our trainers.")
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{index_path} is not valid JSON ({error.msg}): re-save or re-download the pipeline.") from None
    if not isinstance(index, dict) or not index.get("_class_name"):
        raise ValueError(f"{index_path} names no pipeline class (_class_name): re-save or re-download the pipeline.")
    pipeline_class = _index_class(index["_class_name"], "_class_name", DiffusionPipeline)
    components = {}
    components_taken, settings_taken = pipeline_class._get_signature_keys(pipeline_class)
    settings = {}
    for name, entry in index.items():
        if name in settings_taken and name not in components_taken:  # e.g. a conditional pipeline's class_names
            settings[name] = entry
        elif not name.startswith("_") and isinstance(entry, list):  # other entries are pipeline settings
            component_class = _index_class(entry, name, ConfigMixin)
            if component_class is not None and not issubclass(component_class, (ModelMixin, SchedulerMixin)):
                # A nested pipeline (or any other loader) would read its folder through diffusers' own loader, which
                # falls back to pickled weights: only models (safetensors only) and schedulers (a config) are loaded.
                raise ValueError(
                    f"model_index.json names a {component_class.__name__} as its {name!r} component, which is neither a "
                    "model nor a scheduler: diffusion_lab does not load it (its weights could be pickled). Re-save or "
                    "re-download the pipeline."
                )
            components[name] = None if component_class is None else _load_component(component_class, folder, name, torch_dtype)
    try:
        return pipeline_class(**components, **{**settings, **kwargs})
    except TypeError as error:
        raise ValueError(f"{index_path} does not list the components {pipeline_class.__name__} takes ({error}): re-save the pipeline.") from None
