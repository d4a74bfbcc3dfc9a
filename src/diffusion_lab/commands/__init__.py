"""The command surface: `diffusion-lab COMMAND ...` (or `python -m diffusion_lab COMMAND ...`), one thin parser per
command over the library, plus the root scripts `train_ddpm.py` / `train_cold.py` for `accelerate launch`.

Bad input becomes one line on stderr and exit status 2 (tracebacks only with --debug). A run stopped early (a
signal, a non-finite loss) exits with its own status and says how to go on.
"""

from __future__ import annotations

import importlib
import sys

from ..run_files import hide_secrets, secret_values
from ..stopping import TrainingStopped, interruption

# Errors that mean "the user asked for something we cannot do", as opposed to bugs.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError, OSError)

# command name: (module in this package, what it does)
COMMANDS = {
    "train-ddpm": ("train_ddpm", "train a DDPM and save it as a diffusers pipeline"),
    "train-cold": ("train_cold", "train a cold-diffusion restorer and save it as a diffusers pipeline"),
    "sample": ("sample", "generate images from a saved pipeline"),
    "autoguide": ("autoguide", "guide an unconditional DDPM pipeline by an earlier checkpoint of itself (autoguidance)"),
    "evaluate": ("evaluate", "score generated images (digit FD/IS, PSNR/SSIM, FID/IS where weights are cached)"),
    "plot": ("plot", "figures of a training run: loss curves, metrics, sample grids"),
    "plot-schedules": ("plot_schedules", "beta_t and alpha-bar_t of every noise schedule"),
    "experiments": ("experiments", "train and evaluate every variant in experiments/ and tabulate them"),
    "train-digit-classifier": ("train_digit_classifier", "retrain the digit classifier behind the MNIST metrics"),
}


def run_command(main, argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        main(argv)
    except (*USER_ERRORS, TrainingStopped, KeyboardInterrupt) as error:
        if "--debug" in argv:
            raise
        if isinstance(error, KeyboardInterrupt):  # outside the training steps and sampling, where nothing is half-written
            what, exit_code = interruption(error)
            print(what if exit_code == 130 else f"stopped: {what}: nothing was written; rerun the command.", file=sys.stderr)
            sys.exit(exit_code)
        # The line may repeat a value the user typed (a repo id, a path): no token value in it, whatever the spelling.
        line = hide_secrets(f"{'stopped' if isinstance(error, TrainingStopped) else 'error'}: {error}", secret_values(argv=argv))
        print(line, file=sys.stderr)
        sys.exit(error.exit_code if isinstance(error, TrainingStopped) else 2)


def check_device(device: str) -> None:
    """--device of the sampling commands: refused now, not after loading."""
    import torch

    try:
        torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device: use cpu, cuda or cuda:N.") from None


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "usage: diffusion-lab COMMAND [flags]   (diffusion-lab COMMAND --help for its flags)\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """The `diffusion-lab` console script: dispatch to the command named first."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    if argv[0] not in COMMANDS:
        line = f"error: {argv[0]!r} is not a command: use one of {', '.join(COMMANDS)} (diffusion-lab --help)."
        print(hide_secrets(line, secret_values(argv=argv)), file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(f"{__name__}.{COMMANDS[argv[0]][0]}")
    sys.argv[0] = f"diffusion-lab {argv[0]}"  # argparse's --help and error lines name the command as typed
    run_command(module.main, argv[1:])
