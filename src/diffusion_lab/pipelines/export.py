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
from pathlib import Path


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


def save_pipeline(pipeline, output_dir: str | os.PathLike) -> None:
    """`save_pretrained` (safetensors) into `output_dir`, replacing the previous pipeline there as a whole."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / ".pipeline.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    pipeline.save_pretrained(tmp, safe_serialization=True)
    index = json.loads((tmp / "model_index.json").read_text())
    if _is_ours(pipeline):
        index["_class_name"] = [_copy_source(type(pipeline), tmp), type(pipeline).__name__]
    for name, component in pipeline.components.items():
        if component is not None and _is_ours(component):
            index[name] = [_copy_source(type(component), tmp / name), type(component).__name__]
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    # model_index.json moves last: until then, the folder still describes the previous pipeline.
    for entry in sorted(tmp.iterdir(), key=lambda path: path.name == "model_index.json"):
        target = output_dir / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
    tmp.rmdir()


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


def load_pipeline(path_or_id: str, **kwargs):
    """Load a saved pipeline using diffusion_lab's own classes, so no code from the folder is run."""
    import diffusers
    from huggingface_hub import snapshot_download

    folder = Path(path_or_id)
    if not folder.is_dir():
        folder = Path(snapshot_download(path_or_id))
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{folder} holds no model_index.json: pass a folder written by save_pretrained / our trainers.")
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{index_path} is not valid JSON ({error.msg}): re-save or re-download the pipeline.") from None
    class_name = index["_class_name"]
    pipeline_class = _our_class(class_name[1]) if isinstance(class_name, list) else getattr(diffusers, class_name)
    components = {}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list):
            continue
        library, component_class_name = entry
        component_class = _our_class(component_class_name) if library not in ("diffusers", None) else getattr(diffusers, component_class_name, None)
        if component_class is None:
            raise ValueError(f"component {name} needs class {component_class_name}, which is unknown here: upgrade diffusion_lab / diffusers.")
        components[name] = component_class.from_pretrained(folder, subfolder=name)
    return pipeline_class(**components, **kwargs)
