"""`accelerate launch train_ddpm.py [flags]`: the same as `diffusion-lab train-ddpm` (diffusion_lab.commands.train_ddpm)."""

from diffusion_lab.commands import run_command
from diffusion_lab.commands.train_ddpm import main

if __name__ == "__main__":
    run_command(main)
