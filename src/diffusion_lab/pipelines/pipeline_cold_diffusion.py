"""Cold diffusion sampling (Bansal et al. 2022): restore images degraded by a deterministic D(x, t).

This file imports only torch and diffusers (and their dependencies): it travels with saved pipelines so that
`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` needs nothing else. Only
`ColdDiffusionPipeline.from_pretrained` without remote code imports diffusion_lab, when called.
"""

import importlib
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.models.modeling_utils import ModelMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .class_guidance import guided_prediction, num_classes_of, resolve_class_labels


@dataclass
class ColdDiffusionPipelineOutput(BaseOutput):
    """`images`: the iterative restorations; `degraded`: where sampling started (level T); `direct`: the one-step
    restoration R(x_T, T); `originals`: the given images (conditional sampling) or None. The seeds' four columns."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    degraded: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    direct: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    originals: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None = None


class ColdDiffusionPipeline(DiffusionPipeline):
    r"""
    Pipeline for cold diffusion: generation (from a fitted start distribution) or restoration of given images.

    Parameters:
        unet ([`ModelMixin`]): the restoration network R(x_t, t) predicting x_0, e.g. `UNet2DModel`.
        degradation ([`SchedulerMixin`]): the degradation D(x, t), t = 0..T (see `diffusion_lab.degradations`).
        start_distribution ([`ModelMixin`], *optional*): a distribution over the statistics of fully degraded
            images (`degradation.start_statistics`), e.g. `GaussianMixture`; needed for unconditional sampling.
        class_names (`list[str]`, *optional*): for a class-conditional restorer (`unet.config.num_class_embeds`
            = K + 1, the last being the null class), the name of each class.
    """

    model_cpu_offload_seq = "unet"
    _optional_components = ["start_distribution"]

    def __init__(self, unet: ModelMixin, degradation: SchedulerMixin, start_distribution: ModelMixin | None = None,
                 class_names: list | None = None):
        super().__init__()
        self.register_modules(unet=unet, degradation=degradation, start_distribution=start_distribution)
        if class_names is not None:  # unconditional pipelines keep the model_index.json they always had
            self.register_to_config(class_names=[str(name) for name in class_names])

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor | None = None,
        batch_size: int = 1,
        generator: torch.Generator | None = None,
        num_inference_steps: int | None = None,
        algorithm: int = 2,
        noise: float = 0.0,
        output_type: str | None = "pil",
        return_dict: bool = True,
        class_labels=None,
        guidance_scale: float = 1.0,
    ) -> ColdDiffusionPipelineOutput | tuple:
        r"""
        Args:
            images (`torch.Tensor`, *optional*): (N, C, H, W) in [-1, 1] to degrade to level T and restore;
                without them, `batch_size` fully degraded images are drawn from `start_distribution`.
            batch_size (`int`, defaults to 1): images to generate when `images` is not given.
            generator (`torch.Generator`, *optional*): makes the start (and `noise`) reproducible.
            num_inference_steps (`int`, *optional*): restoration steps, levels spaced evenly from T to 0;
                default: all T levels.
            algorithm (`int`, defaults to 2): Bansal et al.'s Algorithm 1, x_{s-1} = D(x̂0, s-1), or Algorithm 2
                (their improved sampler), x_{s-1} = x_s - D(x̂0, s) + D(x̂0, s-1), where x̂0 = R(x_s, s) and
                D(x, 0) = x; both return x_0 (for Algorithm 2 the last step is x_0 = x_1 - D(x̂0, 1) + x̂0, not x̂0).
            noise (`float`, defaults to 0): std of Gaussian noise added to the start to break symmetry.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` or `"pt"`.
            return_dict (`bool`, defaults to `True`): return a [`ColdDiffusionPipelineOutput`] or a tuple
                (images, degraded, direct, originals).
            class_labels (`int`, `str`, `list` or `torch.Tensor`, *optional*): class-conditional restorers only: the
                class of each image (index or name), one for all or one per image; None: unconditional.
            guidance_scale (`float`, defaults to 1.0): classifier-free guidance on the x0 prediction,
                x0_u + w (x0_c - x0_u); 1 is the plain conditional restorer, 0 the unconditional one.
        """
        if algorithm not in (1, 2):
            raise ValueError(f"algorithm {algorithm} is unknown: use 1 (direct re-degradation) or 2 (the paper's improved sampler).")
        device = self._execution_device
        num_levels = self.degradation.num_levels

        num_classes = num_classes_of(self.unet)
        # One label per given image; when generating, the labels can set the batch size.
        expected = len(images) if images is not None else (None if batch_size == 1 else batch_size)
        labels = resolve_class_labels(class_labels, expected, getattr(self.config, "class_names", None), num_classes, device)
        if labels is not None and images is None:
            batch_size = len(labels)

        # 1. Fully degraded start x_T: the given images at level T, or a draw from the start distribution.
        if images is not None:
            images = images.to(device=device, dtype=self.unet.dtype)
            start = self.degradation.degrade(images, num_levels)
        elif self.start_distribution is None:
            raise ValueError("this pipeline has no start_distribution: pass images= to restore, or fit one (train_cold.py does).")
        else:
            statistics = self.start_distribution.sample(batch_size, generator=generator)
            start = self.degradation.start_from_statistics(statistics, self.unet.config.in_channels)
            start = start.to(device=device, dtype=self.unet.dtype)
        if noise > 0:
            start = start + noise * randn_tensor(start.shape, generator=generator, device=device, dtype=start.dtype)

        # 2. Restore from level T down to 0 (R is never called at t = 0); x_0 is the result.
        steps = num_levels if num_inference_steps is None else min(num_inference_steps, num_levels)
        if steps < 1:
            raise ValueError(f"num_inference_steps {num_inference_steps} must be at least 1.")
        levels = torch.linspace(num_levels, 0, steps + 1).round().long().tolist()
        sample, direct = start, None
        for level, next_level in self.progress_bar(list(zip(levels[:-1], levels[1:]))):
            timesteps = torch.full((sample.shape[0],), level, device=device, dtype=torch.long)
            restored = guided_prediction(self.unet, sample, timesteps, labels, num_classes, guidance_scale)
            direct = restored if direct is None else direct
            # D(x, 0) = x: Algorithm 1 ends with x̂0, Algorithm 2 with x_1 - D(x̂0, 1) + x̂0.
            lower = restored if next_level == 0 else self.degradation.degrade(restored, next_level)
            sample = lower if algorithm == 1 else sample - self.degradation.degrade(restored, level) + lower

        outputs = [self._postprocess(x, output_type) for x in (sample, start, direct, images)]
        self.maybe_free_model_hooks()
        if not return_dict:
            return tuple(outputs)
        return ColdDiffusionPipelineOutput(*outputs)

    def _postprocess(self, images: torch.Tensor | None, output_type: str):
        if images is None:
            return None
        images = (images / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return images
        images = images.cpu().permute(0, 2, 3, 1).float().numpy()
        return self.numpy_to_pil(images) if output_type == "pil" else images

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a saved pipeline (a folder or a Hub id).

        With `trust_remote_code=True` this is `DiffusionPipeline.from_pretrained`, which runs the code saved with the
        pipeline (diffusers alone suffices) and takes its keyword arguments. Otherwise nothing from the folder runs:
        this is `diffusion_lab.load_pipeline` (diffusion-lab must be installed), which builds every component with
        diffusion_lab's or diffusers' own class of the recorded name, weights from safetensors only; the one keyword
        argument it takes is `torch_dtype`, the dtype of the models' weights.
        """
        if kwargs.pop("trust_remote_code", False):
            return DiffusionPipeline.from_pretrained(pretrained_model_name_or_path, trust_remote_code=True, **kwargs)
        torch_dtype = kwargs.pop("torch_dtype", None)
        if kwargs:
            raise TypeError(
                f"{cls.__name__}.from_pretrained without trust_remote_code takes only torch_dtype, not {', '.join(kwargs)}: "
                "drop them, or pass trust_remote_code=True to load with DiffusionPipeline.from_pretrained."
            )
        # Imported here, not at the top: this file also travels as remote code, to machines without diffusion_lab. And
        # not by an import statement, which diffusers' remote-code loader would find and import (or warn about).
        try:
            load_pipeline = importlib.import_module("diffusion_lab.pipelines.export").load_pipeline
        except ModuleNotFoundError as error:
            if (error.name or "").split(".")[0] != "diffusion_lab":
                raise
            raise ModuleNotFoundError(
                f"{cls.__name__}.from_pretrained without trust_remote_code needs diffusion-lab, which runs no code from the "
                "folder: install it (pip install diffusion-lab), or pass trust_remote_code=True to run the code saved with "
                "the pipeline."
            ) from None
        pipeline = load_pipeline(str(pretrained_model_name_or_path), torch_dtype=torch_dtype)
        # By name: the class of this file run as remote code is not diffusion_lab's, whose instance load_pipeline builds.
        if cls.__name__ not in (base.__name__ for base in type(pipeline).__mro__):
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a {type(pipeline).__name__}, not a {cls.__name__}: load it with "
                "diffusion_lab.load_pipeline."
            )
        return pipeline
