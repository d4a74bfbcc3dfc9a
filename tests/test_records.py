"""What the run's records (training_args.json, the model card, tracker hyper-parameters) may hold: no token value
from any flag or the environment, no absolute local path, whatever the spelling (issue 17, section 1)."""

import ast
import importlib
import json

import pytest
from helpers import ROOT, TINY_RUN

from diffusion_lab.commands import run_command, train_cold, train_ddpm
from diffusion_lab.commands.argument_types import CommandParser
from diffusion_lab.run_files import RecordFilter, public_args

COMMAND_FILES = [*ROOT.glob("*.py"), *(ROOT / "src" / "diffusion_lab").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]


def test_every_argument_parser_refuses_abbreviations():
    """argparse reads `--hub_tok` as `--hub_token` unless told not to: every parser of every command is (the
    commands' CommandParser always; any other parser by its own flag)."""
    assert CommandParser(allow_abbrev=True).allow_abbrev is False
    parsers = []
    for path in COMMAND_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(node.func, "attr", getattr(node.func, "id", None)) if isinstance(node, ast.Call) else None
            if name == "ArgumentParser":
                keywords = {keyword.arg: keyword.value for keyword in node.keywords}
                assert "allow_abbrev" in keywords and keywords["allow_abbrev"].value is False, f"{path}:{node.lineno}"
            if name in ("ArgumentParser", "CommandParser"):
                parsers.append(path.name)
    assert {"train_ddpm.py", "train_cold.py", "sample.py", "evaluate.py", "plot.py", "experiments.py"} <= set(parsers)


@pytest.mark.parametrize("module, argv", [
    (train_ddpm, ["--hub_tok", "hf_SECRET123"]),
    (train_cold, ["--output_d", "x"]),
    ("diffusion_lab.commands.sample", ["pipeline", "--num_im", "4"]),
    ("diffusion_lab.commands.evaluate", ["samples.npz", "--overw"]),
])
def test_an_abbreviated_flag_is_refused_with_status_2(module, argv, capsys):
    module = importlib.import_module(module) if isinstance(module, str) else module
    with pytest.raises(SystemExit) as exit_info:
        run_command(module.main, argv)
    err = capsys.readouterr().err
    abbreviation = next(word for word in argv if word.startswith("--"))
    assert exit_info.value.code == 2 and f"unrecognized arguments: {abbreviation}" in err.strip().splitlines()[-1]


def test_record_filter_works_by_value_not_by_flag(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_ENVSECRET456")
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "oldstyle_SECRET789")
    argv = ["train_ddpm.py", "--output_dir=/home/someone/runs/ddpm", "--hub_token=hf_FLAGSECRET1", "--hub_model_id",
            "hf_ENVSECRET456", "--dataset_name", "/data/mnist/", "--seed", "3"]
    args = train_ddpm.parse_args(argv[1:])
    record_filter = RecordFilter(args, argv)
    words = [record_filter(word) for word in argv[1:]]
    assert words == ["--output_dir=ddpm", "--hub_token=***", "--hub_model_id", "***", "--dataset_name", "mnist", "--seed", "3"]
    recorded = public_args(args, record_filter)
    assert "hub_token" not in recorded and recorded["hub_model_id"] == "***"
    assert recorded["output_dir"] == "ddpm" and recorded["dataset_name"] == "mnist"
    # Anything shaped like a Hugging Face token, and a known value inside a longer string.
    assert record_filter("note hf_abcdefghijklmnopqrstuvwxyz0123 end") == "note *** end"
    assert record_filter("x=oldstyle_SECRET789;/home/someone/runs/ddpm/logs") == "x=***;ddpm/logs"


def test_hub_token_and_local_paths_are_never_written_in_any_spelling(tmp_path, monkeypatch, capsys):
    """--hub_token=..., --output_dir=/abs, both token variables: no file of the run holds any of them, and the
    command-line token draws a warning that does not repeat it."""
    monkeypatch.setenv("HF_TOKEN", "hf_ENVSECRET456")
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "hf_OLDENVSECRET7")
    folder = tmp_path / "run"
    argv = [f"--output_dir={folder}", *TINY_RUN, "--max_train_steps", "1", "--checkpointing_steps", "1",
            "--logger", "tensorboard", "--hub_token=hf_SECRET123", "--hub_model_id", "someone/hf_OLDENVSECRET7"]
    args = train_ddpm.parse_args(argv)
    train_ddpm.run_training(args, train_ddpm.DDPMObjective.from_args(args), argv=["train_ddpm.py", *argv])
    err = capsys.readouterr().err
    assert "warning: --hub_token on the command line" in err and "hf auth login" in err and "hf_SECRET123" not in err
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert (folder / "README.md") in files and any(path.name.startswith("events.out.tfevents") for path in files)
    for path in files:
        data = path.read_bytes()
        for secret in (b"hf_SECRET123", b"hf_ENVSECRET456", b"hf_OLDENVSECRET7", str(tmp_path).encode()):
            assert secret not in data, (path, secret)
    command = json.loads((folder / "training_args.json").read_text())["command"]
    assert "--output_dir=run" in command and "--hub_token=***" in command


def test_no_warning_without_a_token_flag(tmp_path, capsys):
    args = train_ddpm.parse_args(["--output_dir", str(tmp_path / "r"), *TINY_RUN, "--max_train_steps", "1"])
    train_ddpm.run_training(args, train_ddpm.DDPMObjective.from_args(args), argv=["train_ddpm.py"])
    assert "hub_token" not in capsys.readouterr().err


def test_a_token_on_the_command_line_draws_a_warning_that_does_not_repeat_it():
    from diffusion_lab.training.arguments import training_warnings

    assert training_warnings(train_ddpm.parse_args([])) == []
    warnings = training_warnings(train_ddpm.parse_args(["--hub_token", "hf_SECRET123"]))
    assert len(warnings) == 1 and "hf_SECRET123" not in warnings[0] and warnings[0].startswith("warning: --hub_token on the command line")
