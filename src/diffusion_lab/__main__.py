"""`python -m diffusion_lab COMMAND ...`, the same as the `diffusion-lab` console script."""

from .commands import main

main()
