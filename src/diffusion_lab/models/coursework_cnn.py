"""The coursework CNN denoiser as a diffusers model.

This file imports only torch and diffusers: it is copied next to the saved weights so that
`DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` can rebuild the model on a machine
that has diffusers but not diffusion_lab.
"""

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn

NORMS = ("layer_norm", "none")


class ConvLayerNormBlock(nn.Module):
    """Conv -> LayerNorm over (H, W) -> GELU, as in the coursework starter code (norm="none": Conv -> GELU)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, sample_size: int, norm: str = "layer_norm"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        # Normalises each channel over its spatial map only, hence the shape (H, W).
        self.norm = nn.LayerNorm((sample_size, sample_size)) if norm == "layer_norm" else nn.Identity()
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class CourseworkCNN(ModelMixin, ConfigMixin):
    """Five-convolution denoiser with a sinusoidal time embedding added after the first block.

    Time enters as t / T, encoded with a zero frequency and the frequencies 2*pi*1.5^k
    (k = 0..time_embedding_frequencies-2), as sin and (cos - 1) features, then an MLP
    32 -> 128 -> 128 -> 128 -> hidden_channels[0] (`time_mlp_hidden_layers` = 3 hidden layers, GELU).

    The starter code's form is the default: 3 hidden layers and a LayerNorm over (H, W) after every hidden
    convolution. The encoder/decoder report's form (`--model cnn_report`) has 2 hidden layers
    (32 -> 128 -> 128 -> 16) and no normalisation: `time_mlp_hidden_layers=2, norm="none"`.

    With `num_class_embeds` (class-conditional models) a learnt embedding of the class label, of size
    hidden_channels[0], is added to the time embedding, as `UNet2DModel(num_class_embeds=...)` does; the last
    index is the null class of classifier-free guidance by this project's convention.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 28,
        in_channels: int = 1,
        out_channels: int = 1,
        hidden_channels: tuple = (16, 32, 32, 16),
        kernel_size: int = 7,
        last_kernel_size: int = 3,
        time_embedding_frequencies: int = 16,
        time_mlp_width: int = 128,
        num_train_timesteps: int = 1000,
        time_mlp_hidden_layers: int = 3,
        norm: str = "layer_norm",
        num_class_embeds: int | None = None,
    ):
        super().__init__()
        if norm not in NORMS or time_mlp_hidden_layers < 1:
            raise ValueError(f"norm {norm!r} must be one of {', '.join(NORMS)} and time_mlp_hidden_layers {time_mlp_hidden_layers} >= 1.")
        widths = [in_channels, *hidden_channels]
        self.blocks = nn.ModuleList(
            ConvLayerNormBlock(c_in, c_out, kernel_size, sample_size, norm) for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self.conv_out = nn.Conv2d(widths[-1], out_channels, last_kernel_size, padding=last_kernel_size // 2)
        # Linear -> GELU per hidden layer, then a linear output: indices 0, 2, 4, 6 hold the Linears for 3 hidden layers.
        mlp = [nn.Linear(2 * time_embedding_frequencies, time_mlp_width), nn.GELU()]
        for _ in range(time_mlp_hidden_layers - 1):
            mlp += [nn.Linear(time_mlp_width, time_mlp_width), nn.GELU()]
        self.time_mlp = nn.Sequential(*mlp, nn.Linear(time_mlp_width, hidden_channels[0]))
        self.class_embedding = nn.Embedding(num_class_embeds, hidden_channels[0]) if num_class_embeds else None
        frequencies = [0.0] + [2 * math.pi * 1.5**k for k in range(time_embedding_frequencies - 1)]
        self.register_buffer("frequencies", torch.tensor(frequencies), persistent=False)

    def time_features(self, timestep: torch.Tensor) -> torch.Tensor:
        """sin / (cos - 1) features of t / T; (cos - 1) makes every feature 0 at t = 0."""
        phases = (timestep.float() / self.config.num_train_timesteps)[:, None] * self.frequencies[None, :]
        return torch.cat([torch.sin(phases), torch.cos(phases) - 1], dim=1)

    def forward(self, sample: torch.Tensor, timestep, class_labels: torch.Tensor | None = None, return_dict: bool = True):
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], device=sample.device)
        timestep = timestep.to(sample.device).reshape(-1).expand(sample.shape[0])
        time_embedding = self.time_mlp(self.time_features(timestep).to(sample.dtype))
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("class_labels should be provided when doing class conditioning")
            time_embedding = time_embedding + self.class_embedding(class_labels.to(sample.device)).to(sample.dtype)
        hidden = self.blocks[0](sample) + time_embedding[:, :, None, None]
        for block in self.blocks[1:]:
            hidden = block(hidden)
        out = self.conv_out(hidden)
        return UNet2DOutput(sample=out) if return_dict else (out,)
