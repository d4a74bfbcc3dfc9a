"""What the run's records (training_args.json, the model card, tracker hyper-parameters) may hold: no token value
from any flag or the environment, no absolute local path, whatever the spelling (issue 17, section 1)."""

import ast
import importlib
import json

import pytest
from helpers import ROOT, TINY_RUN, run_script

from diffusion_lab.argument_types import CommandParser
from diffusion_lab.commands import run_command, train_cold, train_ddpm
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


TOKEN = "s3cret-Value-42"  # not shaped like a Hugging Face token: only its value can hide it
ECHOES = {  # commands whose error line would repeat what was typed
    "an unknown flag's value": ["train-ddpm", "--hub_tok", TOKEN],
    "an unknown flag=value": ["sample", "pipeline", f"--hub_tok={TOKEN}"],
    "an invalid choice": ["train-ddpm", "--optimizer", TOKEN],
    "a value that is no number": ["evaluate", "samples.npz", "--seed", TOKEN],
    "a path in a refusal": ["train-ddpm", "--output_dir", "out", "--inception_weights", f"weights/{TOKEN}.pth"],
    "a run folder that does not exist": ["plot", f"runs/{TOKEN}"],
    "a Hub id of a dataset": ["train-digit-classifier", "--dataset", f"{TOKEN}/mnist", "--output", "w.safetensors"],
    "a command that does not exist": [TOKEN],
}
SOURCES = {
    "--hub_token VALUE": lambda monkeypatch, tmp_path: ["--hub_token", TOKEN],
    "--hub_token=VALUE": lambda monkeypatch, tmp_path: [f"--hub_token={TOKEN}"],
    "HF_TOKEN": lambda monkeypatch, tmp_path: monkeypatch.setenv("HF_TOKEN", TOKEN) or [],
    "HUGGING_FACE_HUB_TOKEN": lambda monkeypatch, tmp_path: monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", TOKEN) or [],
    "stored login": lambda monkeypatch, tmp_path: stored_login(monkeypatch, tmp_path) or [],
}


def stored_login(monkeypatch, tmp_path):
    """`hf auth login`'s token file, where huggingface_hub reads it (HF_HOME/token)."""
    from huggingface_hub import constants

    (tmp_path / "token").write_text(TOKEN)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("echo", ECHOES)
def test_no_error_line_repeats_a_token_value_in_any_spelling(echo, source, monkeypatch, tmp_path, capsys):
    """Each token source, each kind of error line that repeats what was typed: the line is printed, the value never."""
    from diffusion_lab.commands import main

    argv = [*ECHOES[echo], *SOURCES[source](monkeypatch, tmp_path)]
    monkeypatch.setattr("sys.argv", ["diffusion-lab", *argv])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert TOKEN not in out + err, err
    assert "***" in err or "unrecognized arguments" in err, err  # the line still says what was wrong


def test_a_token_is_masked_in_a_run_commands_line_even_when_the_flag_is_parsed_later(monkeypatch, capsys):
    """`stopped:` lines and messages raised deep in a command go through the same filter as argparse's."""
    from diffusion_lab.stopping import TrainingStopped

    def stop(argv):
        raise TrainingStopped(f"cannot write runs/{TOKEN}/metrics.jsonl", exit_code=1)

    with pytest.raises(SystemExit) as exit_info:
        run_command(stop, ["--hub_token", TOKEN])
    assert exit_info.value.code == 1 and capsys.readouterr().err == "stopped: cannot write runs/***/metrics.jsonl\n"


def test_the_console_script_masks_the_stored_login_of_hf_home(tmp_path):
    """The same, end to end: `python -m diffusion_lab` with HF_HOME holding a login, the token inside a path."""
    (tmp_path / "hf_home").mkdir()
    (tmp_path / "hf_home" / "token").write_text(TOKEN)
    result = run_script("-m", "diffusion_lab", "plot", f"runs/{TOKEN}", env={"HF_HOME": str(tmp_path / "hf_home"), "HF_TOKEN": ""})
    assert result.returncode == 2 and result.stderr == "error: run folder runs/*** does not exist: pass the --output_dir of a training run.\n"


DAMAGED_METRICS = [
    b'{"step": 1, "epoch": 1, "loss": 1.0}',
    b"[1, 2, 3]",  # a JSON array
    b"null",
    b'{"loss": 0.5}',  # no step, no epoch
    b'{"step": "7", "epoch": 1, "loss": 0.4}',
    b'{"step": true, "epoch": 1, "loss": 0.4}',
    b'{"step": 3, "epoch": -1, "loss": 0.4}',
    b"\xff\xfe not text",
    b'{"step": 2, "epoch": 1, "loss": 0.5, "note": "a word is no metric", "flag": true}',
    b'{"step": 4, "epoch": 1, "lo',  # cut off by a crash
]


def damaged_run(folder):
    folder.mkdir()
    (folder / "metrics.jsonl").write_bytes(b"\n".join(DAMAGED_METRICS))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline", "_diffusers_version": "0.42.1"}))
    return folder


def test_every_reader_of_metrics_skips_damaged_lines_with_one_note(tmp_path, capsys):
    """`plot`, the model card and the library reader take what is readable and say, once, what they skipped."""
    from diffusion_lab.commands import plot
    from diffusion_lab.hub import model_card
    from diffusion_lab.run_files import read_metrics

    folder = damaged_run(tmp_path / "run")
    metrics = read_metrics(folder)
    assert metrics.series == {"loss": {1: 1.0, 2: 0.5}} and metrics.epoch_of_step == {1: 1, 2: 1}
    note = capsys.readouterr().err.splitlines()
    assert note == [f"note: skipped 8 damaged line(s) of {folder / 'metrics.jsonl'} (line 2: not a JSON object; line 3: not a JSON "
                    "object; line 4: no step (a whole number >= 0); ...); the other lines are used."]
    run_command(plot.main, [str(folder), "--output_dir", str(tmp_path / "plots")])
    out, err = capsys.readouterr()
    assert err.splitlines() == note and out.splitlines() == [f"wrote {tmp_path / 'plots' / 'loss_curves.png'}"]
    assert "- loss: 0.5" in model_card(folder, "me/run") and capsys.readouterr().err.splitlines() == note
