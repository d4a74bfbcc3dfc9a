"""`accelerate launch train_cold.py [flags]`: the same as `diffusion-lab train-cold` (diffusion_lab.commands.train_cold)."""

from diffusion_lab.commands import run_command
from diffusion_lab.commands.train_cold import main

if __name__ == "__main__":
    run_command(main)
