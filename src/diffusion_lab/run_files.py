"""The files of a run folder that other code reads, each written and read here, in one place.

- `metrics.jsonl`: one JSON object per logged step, `{"step": s, "epoch": e, <name>: <value>...}`, appended by the
  trainer; a resumed run logs some steps again (the later line wins).
- `training_args.json`: `{"command": ..., "args": {flag: value}, "run": {what the run did}}`, with no token value
  and no absolute local path anywhere (`RecordFilter`).

The trainer writes them, and the model card (`hub`), the plots (`evaluation.plot_run`) and the experiment runner
read them. `write_text_atomically` / `write_json_atomically` are for any file that a reader may open while it is
rewritten, or that a kill may cut mid-write (the benchmarks' reports, the experiment table).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
TRAINING_ARGS_FILE = "training_args.json"
# Files that show a folder already holds a run (ours or any saved pipeline).
RUN_MARKERS = ("model_index.json", METRICS_FILE, TRAINING_ARGS_FILE)


def write_text_atomically(path: Path, text: str) -> None:
    """Write `path` through a temporary file beside it and a rename: a reader, or a kill at any moment, sees the old
    file or the new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: several may rewrite one file
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no part behind
        raise


def write_json_atomically(path: Path, value) -> None:
    """`value` as indented JSON, written atomically (`write_text_atomically`)."""
    write_text_atomically(path, json.dumps(value, indent=2) + "\n")


def append_metrics(run_dir: Path, step: int, values: dict) -> None:
    """One line of metrics.jsonl."""
    with (run_dir / METRICS_FILE).open("a") as file:
        file.write(json.dumps({"step": step, **values}) + "\n")


@dataclass
class Metrics:
    """Each logged number as a series `{name: {step: value}}`, and the epoch of each logged step."""

    series: dict[str, dict[int, float]]
    epoch_of_step: dict[int, int]

    def last(self, name: str) -> float | None:
        """The value of `name` at the last step that logged it."""
        values = self.series.get(name)
        return values[max(values)] if values else None

    def latest(self, leave_out: tuple[str, ...] = ()) -> dict[str, float]:
        """The last value of every series but those in `leave_out`."""
        return {name: self.last(name) for name in self.series if name not in leave_out}


def read_metrics(run_dir: Path, missing_ok: bool = False) -> Metrics:
    """The run's metrics.jsonl; a missing file is an error unless `missing_ok` (then no series)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        if missing_ok:
            return Metrics({}, {})
        raise FileNotFoundError(f"{path} does not exist: pass a run folder written by train_ddpm.py / train_cold.py.")
    series: dict[str, dict[int, float]] = {}
    epoch_of_step: dict[int, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} line {number} is not JSON ({error.msg}): fix or delete that line.") from None
        step = record.pop("step")
        epoch_of_step[step] = record.pop("epoch", None)
        for name, value in record.items():
            if isinstance(value, (int, float)):
                series.setdefault(name, {})[step] = float(value)
    return Metrics(series, epoch_of_step)


def read_training_args(run_dir: Path) -> dict:
    """The run's training_args.json (`command`, `args`, `run`); an empty record for a folder without one (a
    pipeline saved by other code)."""
    path = Path(run_dir) / TRAINING_ARGS_FILE
    if not path.is_file():
        return {"command": "", "args": {}, "run": {}}
    return {"run": {}, **json.loads(path.read_text())}


# Where huggingface_hub looks for a token besides --hub_token.
TOKEN_ENVIRONMENT = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# A Hugging Face access token, wherever it appears (e.g. pasted into the wrong flag).
TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{20,}")
HIDDEN = "***"


def secret_values(args: argparse.Namespace | None = None) -> set[str]:
    """Every token value this run knows of: --hub_token, the environment and huggingface_hub's stored login."""
    values = {getattr(args, "hub_token", None), *(os.environ.get(name) for name in TOKEN_ENVIRONMENT)}
    try:
        from huggingface_hub import get_token

        values.add(get_token())
    except Exception:  # no readable token file: nothing more to hide
        pass
    return {value for value in values if isinstance(value, str) and len(value) >= 4}


class RecordFilter:
    """Cleans every value that goes into a record (training_args.json, the model card, tracker hyper-parameters).

    It works on values, not on flag spellings: each token value the run knows of (and anything shaped like a
    Hugging Face token) becomes `***`, and each absolute local path becomes its last component, wherever it appears
    -- as a flag value, after `--flag=`, or inside a longer string.
    """

    def __init__(self, args: argparse.Namespace | None, argv: list[str] = ()):
        self.secrets = sorted(secret_values(args), key=len, reverse=True)
        found = {*self._absolute_paths(vars(args).values() if args is not None else ()), *self._absolute_paths(argv)}
        self.paths = sorted(found, key=len, reverse=True)

    @staticmethod
    def _absolute_paths(values) -> set[str]:
        paths = set()
        for value in values:
            for item in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(item, str):
                    candidate = item.split("=", 1)[1] if item.startswith("-") and "=" in item else item
                    if os.path.isabs(candidate) and len(candidate) > 1:
                        paths.update({candidate, candidate.rstrip("/") or candidate})
        return paths

    def hide(self, value: str) -> str:
        """`value` with every known token and absolute path replaced, wherever they occur in it."""
        for secret in self.secrets:
            value = value.replace(secret, HIDDEN)
        value = TOKEN_PATTERN.sub(HIDDEN, value)
        for path in self.paths:
            value = value.replace(path, Path(path).name)
        return value

    def text(self, value: str) -> str:
        value = self.hide(value)
        if value.startswith("-") and "=" in value:
            flag, rest = value.split("=", 1)
            return f"{flag}={self._path_free(rest)}"
        return self._path_free(value)

    @staticmethod
    def _path_free(value: str) -> str:
        return Path(value).name if os.path.isabs(value) else value

    def __call__(self, value):
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, (list, tuple)):
            return type(value)(self(item) for item in value)
        if isinstance(value, dict):
            return {key: self(item) for key, item in value.items()}
        return value

    def leaks(self, text: str) -> bool:
        return any(secret in text for secret in self.secrets) or bool(TOKEN_PATTERN.search(text))


def public_args(args: argparse.Namespace, record_filter: RecordFilter | None = None) -> dict:
    """The flags worth recording: no token value anywhere, no absolute local paths."""
    record_filter = record_filter or RecordFilter(args)
    return {key: record_filter(value) for key, value in vars(args).items() if key != "hub_token"}


def token_on_command_line_warning(args: argparse.Namespace) -> str | None:
    """A warning, which does not repeat the token, when one was passed as a flag."""
    if getattr(args, "hub_token", None) is None:
        return None
    return (
        "warning: --hub_token on the command line can be read by other users of this machine (ps, shell history), and "
        "`accelerate launch` prints the whole command if training fails: set HF_TOKEN or run `hf auth login` instead."
    )


def write_run_info(output_dir: Path, args: argparse.Namespace, argv: list[str], run: dict | None = None) -> None:
    """training_args.json: the command (with the launcher settings actually used), every flag, and `run`, what the
    run actually did (images, steps, epochs, processes, precision)."""
    record_filter = RecordFilter(args, argv)
    words = [Path(argv[0]).name] + [record_filter(arg) for arg in argv[1:]]
    run = run or {}
    launcher = [f"--{name} {run[name]}" for name in ("num_processes", "mixed_precision") if name in run]
    info = {"command": " ".join(["accelerate launch", *launcher, *(shlex.quote(word) for word in words)]),
            "args": public_args(args, record_filter), "run": record_filter(run)}
    text = json.dumps(info, indent=2) + "\n"
    if record_filter.leaks(text):  # a token spelt differently in JSON (escaped characters): keep it out all the same
        raise ValueError("the run's record would hold a token: pass it through HF_TOKEN or `hf auth login`, not a flag.")
    write_text_atomically(output_dir / TRAINING_ARGS_FILE, text)
