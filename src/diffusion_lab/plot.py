"""`python -m diffusion_lab.plot RUN_DIR`: see diffusion_lab.evaluation.plot_run."""

from .cli import run_command
from .evaluation.plot_run import main

if __name__ == "__main__":
    run_command(main)
