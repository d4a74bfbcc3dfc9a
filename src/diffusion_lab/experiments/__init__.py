"""The experiment table: every variant in `experiments/*.json` trained and scored under one budget (`variants`),
run resume-safely (`runner`), and tabulated (`table`). The command is `diffusion-lab experiments`."""

from .runner import ExperimentRunner
from .variants import BUDGETS, Budget, Sampling, Variant, load_variant, load_variants

__all__ = ["BUDGETS", "Budget", "ExperimentRunner", "Sampling", "Variant", "load_variant", "load_variants"]
