"""Save pipelines so that they load anywhere: safetensors, plus the code of our own classes.

Components whose class is defined in diffusion_lab get their source file copied next to their weights and
`model_index.json` names that file, which is the layout diffusers loads with `trust_remote_code=True`.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from pathlib import Path


def _is_ours(obj) -> bool:
    return type(obj).__module__.startswith("diffusion_lab.")


def save_pipeline(pipeline, output_dir: str | os.PathLike) -> None:
    """`save_pretrained` (safetensors) into `output_dir`, replacing the previous pipeline there as a whole."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / ".pipeline.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    pipeline.save_pretrained(tmp, safe_serialization=True)
    index = json.loads((tmp / "model_index.json").read_text())
    for name, component in pipeline.components.items():
        if component is not None and _is_ours(component):
            source = Path(inspect.getsourcefile(type(component)))
            shutil.copy2(source, tmp / name / source.name)
            index[name] = [source.stem, type(component).__name__]
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    # model_index.json moves last: until then, the folder still describes the previous pipeline.
    for entry in sorted(tmp.iterdir(), key=lambda path: path.name == "model_index.json"):
        target = output_dir / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
    tmp.rmdir()
