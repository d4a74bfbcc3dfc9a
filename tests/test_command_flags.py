"""Every flag of every command, walked from its parser (issue 23, section 3): each number is range-checked where it
is parsed, each path a user can type is taken or refused in one line, and nothing is left behind by a refusal.
docs/troubleshooting.md lists these cases."""

import importlib
import os
from unittest import mock

import numpy as np
import pytest
from helpers import shown_lines

from diffusion_lab.argument_types import PATH_TYPES, CommandParser, Number
from diffusion_lab.commands import COMMANDS, run_command
from diffusion_lab.training.arguments import validate_training_args

TRAINERS = ("train-ddpm", "train-cold")
TYPED_PATHS = ["/", ".", "..", "relative/folder", "with space", "ünïcødé 数字", "with space/ünï"]


class ParserFound(Exception):
    pass


def command_module(name):
    return importlib.import_module(f"diffusion_lab.commands.{COMMANDS[name][0]}")


def parser_of(name) -> CommandParser:
    """The parser the command builds, caught as it starts parsing."""
    def catch(parser, *args, **kwargs):
        raise ParserFound(parser)

    with mock.patch.object(CommandParser, "parse_known_args", catch), pytest.raises(ParserFound) as found:
        command_module(name).parse_args([])
    return found.value.args[0]


def checks_before_work(name):
    """What the command refuses before it does any work: its parse_args (and, for training, the checks of flags
    taken together)."""
    parse_args = command_module(name).parse_args
    return (lambda argv: validate_training_args(parse_args(argv))) if name in TRAINERS else parse_args


def positionals(parser) -> list[str]:
    return ["placeholder" for action in parser._actions if not action.option_strings]


def refused_values(number: Number) -> list[str]:
    """Values `number` must refuse: garbage, non-finite, non-integral, and just past each end of its range."""
    values = ["many", "", "nan", "inf", "-inf"]
    if number.kind is int:
        values += ["3.5", "1e3", "1e30"]
    if number.low is not None:
        values.append(str(number.low if number.low_open else number.low - 1))
    if number.high is not None:
        values.append(str(number.high if number.high_open else number.high + 1))
        values.append("1e30" if number.kind is float else str(10**30))
    return values


def run_and_read(main, argv, capsys):
    """(exit status or None when accepted, the stderr lines), as the console script would run it."""
    capsys.readouterr()
    try:
        run_command(main, argv)
        status = None
    except SystemExit as exit_info:
        status = exit_info.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, (argv, err)
    return status, shown_lines(err)


def test_every_command_builds_its_parser_from_the_shared_types():
    """No numeric flag of any command is parsed by a bare int/float (which takes nan, inf, -1 without a word), unless
    its values are listed (`--algorithm 1|2`)."""
    for name in COMMANDS:
        for action in parser_of(name)._actions:
            assert action.type not in (int, float) or action.choices, (name, action.dest)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_numeric_flag_refuses_out_of_range_and_garbage_values_where_it_is_parsed(name, capsys, empty_working_directory):
    parser = parser_of(name)
    numbers = [action for action in parser._actions if isinstance(action.type, Number)]
    assert numbers or name == "plot", name
    tried = 0
    for action in numbers:
        flag = action.option_strings[-1]
        for value in refused_values(action.type):
            status, lines = run_and_read(checks_before_work(name), [*positionals(parser), f"{flag}={value}"], capsys)
            assert status == 2 and len(lines) == 1 and lines[0].startswith(f"error: {flag} {value}"), (flag, value, lines)
            assert not os.listdir(empty_working_directory), (flag, value)  # no folder made, none to block a retry
            tried += 1
    print(f"{name}: {tried} refused values over {len(numbers)} numeric flags")


@pytest.mark.parametrize("name", COMMANDS)
def test_every_path_flag_takes_or_refuses_any_typed_path_in_one_line(name, capsys, empty_working_directory):
    """/, ., .., relative, spaces, unicode: accepted, or one line and status 2; an empty path is refused."""
    (empty_working_directory / "with space" / "ünï").mkdir(parents=True)
    made = sorted(os.listdir(empty_working_directory))
    parser = parser_of(name)
    paths = [action for action in parser._actions if action.type in PATH_TYPES]
    assert paths, name
    for action in paths:
        others = positionals(parser)
        if action.option_strings:
            argv_for = lambda value: [*others, f"{action.option_strings[-1]}={value}"]  # noqa: E731
        else:
            argv_for = lambda value: [value, *others[1:]]  # noqa: E731
        for value in TYPED_PATHS:
            status, lines = run_and_read(checks_before_work(name), argv_for(value), capsys)
            assert status is None or (status == 2 and len(lines) == 1 and lines[0].startswith("error: ")), (action.dest, value, lines)
        status, lines = run_and_read(checks_before_work(name), argv_for(""), capsys)
        assert status == 2 and len(lines) == 1 and "is not a path" in lines[0], (action.dest, lines)
        assert sorted(os.listdir(empty_working_directory)) == made, action.dest
    (empty_working_directory / "with space" / "ünï").rmdir()
    (empty_working_directory / "with space").rmdir()


@pytest.mark.parametrize("argv, message", [
    (["train-ddpm", "--dataset_name", "/"], "--dataset_name / is the file system root, not a dataset"),
    (["train-cold", "--train_data_dir", "/.."], "--train_data_dir /.. is the file system root, not a dataset"),
    (["evaluate", "samples.npz", "--reference", "/"], "--reference / is the file system root, not a dataset"),
    (["sample", "/"], "/ has no name to name the outputs after: pass --output_dir."),
    (["evaluate", "/"], "/ has no name to name the outputs after: pass --output."),
    (["plot-schedules", "--output", "."], "--output . is not a .png file name"),
    (["plot", "."], "metrics.jsonl does not exist"),
])
def test_paths_that_cannot_work_are_refused_in_one_line_before_any_work(argv, message, capsys, empty_working_directory):
    status, lines = run_and_read(command_module(argv[0]).main, argv[1:], capsys)
    assert status == 2 and lines == [lines[0]] and message in lines[0], lines
    assert not os.listdir(empty_working_directory)  # `plot .` reads the metrics before it makes plots/


NOT_CLASSES = {  # labels an .npz may carry, and the line that refuses them
    "negative": (np.array([0, 1, -1, 3]), "in the labels, image 2 has label -1, outside 0..9 (10 classes)"),
    "beyond the classes": (np.array([0, 1, 2, 10]), "image 3 has label 10, outside 0..9 (10 classes)"),
    "not whole numbers": (np.array([0.0, 1.5, 2.0, 3.0]), "image 1 has label 1.5, not a whole number"),
    "null (NaN)": (np.array([0.0, np.nan, 2.0, 3.0]), "image 1 has no label (null)"),
    "null (None)": (np.array([0, None, 2, 3], dtype=object), "holds Python objects (nulls or mixed values)"),
    "text": (np.array(["0", "1", "2", "3"]), "in the labels, <U1 values of shape (4,) are not one integer class label per image"),
}


@pytest.mark.parametrize("case", NOT_CLASSES)
def test_evaluate_refuses_labels_that_are_no_class_in_one_line(case, tmp_path, capsys):
    from diffusion_lab.commands import evaluate

    labels, message = NOT_CLASSES[case]
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    np.savez(tmp_path / "samples.npz", images=images, labels=labels)
    status, lines = run_and_read(evaluate.main, [str(tmp_path / "samples.npz"), "--dinov2_model", "none"], capsys)
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert sorted(os.listdir(tmp_path)) == ["samples.npz"]
