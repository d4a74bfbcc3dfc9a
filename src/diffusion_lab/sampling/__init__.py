"""Sampling: how images are drawn from every kind of saved pipeline, and what is written of them.

`samplers` (which scheduler, how many steps), `generation` (unconditional, class-conditional and restoration
sampling in seeded batches), `figures` (grids), `sample_files` (the files `diffusion-lab sample` writes) and
`memory` (whether a sampling run fits). The `sample` and `evaluate` commands, the experiment runner and the
trainer's sample grids all draw their images here.
"""

from .figures import class_grid, four_columns, image_grid, uint8_grid
from .generation import (
                         Restorations,
                         class_labels_for,
                         draw,
                         generate,
                         generate_batches,
                         guidance_kwargs,
                         is_class_conditional,
                         labels_for_samples,
                         open_pipeline,
                         restore,
)
from .memory import check_sampling_fits
from .sample_files import (
                         SampleWriter,
                         check_samples_folder,
                         clear_earlier_samples,
                         write_samples,
)
from .samplers import (
                         DEFAULT_SAMPLER,
                         DEFAULT_STEPS,
                         SAMPLERS,
                         autocast_with_fp32_outputs,
                         is_cold,
                         keeps_own_scheduler,
                         swap_scheduler,
                         use_sampler,
)

__all__ = [
    "DEFAULT_SAMPLER", "DEFAULT_STEPS", "SAMPLERS", "Restorations", "SampleWriter", "autocast_with_fp32_outputs",
    "check_samples_folder", "check_sampling_fits", "class_grid", "class_labels_for", "draw", "clear_earlier_samples", "four_columns",
    "generate", "generate_batches", "guidance_kwargs", "image_grid", "is_class_conditional", "is_cold", "keeps_own_scheduler", "labels_for_samples",
    "open_pipeline", "restore", "swap_scheduler", "uint8_grid", "use_sampler", "write_samples",
]
