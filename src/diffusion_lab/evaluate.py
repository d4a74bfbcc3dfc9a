"""`python -m diffusion_lab.evaluate`: see diffusion_lab.evaluation.evaluate."""

from .evaluation.evaluate import main

if __name__ == "__main__":
    main()
