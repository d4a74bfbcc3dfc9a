"""Save pipelines so that they load anywhere: safetensors, plus the code of our own classes.

Components whose class is defined in diffusion_lab get their source file copied next to their weights and
`model_index.json` names that file, which is the layout diffusers loads with `trust_remote_code=True`.
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
