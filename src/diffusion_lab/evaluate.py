"""`python -m diffusion_lab.evaluate`: see diffusion_lab.evaluation.evaluate."""

from .cli import run_command
from .evaluation.evaluate import main

if __name__ == "__main__":
    run_command(main)
