"""`UNet2DModel` configurations that are known to work for our data sizes."""


def unet_config(sample_size: int, channels: int, block_out_channels: tuple, attention_level: int | None,
                layers_per_block: int = 2, norm_num_groups: int = 32, dropout: float | None = None, mid_attention: bool = True) -> dict:
    """A `UNet2DModel` config: one down block per width in `block_out_channels` (each halving the resolution but the
    last), self-attention at down level `attention_level` (None: none there) and at the up level that mirrors it, and
    in the middle block at the lowest resolution unless `mid_attention` is False.
    `dropout` None leaves UNet2DModel's default (0) unwritten, as a config that never set it."""
    levels = range(len(block_out_channels))
    config = dict(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=block_out_channels,
        layers_per_block=layers_per_block,
        down_block_types=tuple("AttnDownBlock2D" if level == attention_level else "DownBlock2D" for level in levels),
        up_block_types=tuple("AttnUpBlock2D" if level == attention_level else "UpBlock2D" for level in reversed(levels)),
        norm_num_groups=norm_num_groups,
    )
    if dropout is not None:
        config["dropout"] = dropout
    if not mid_attention:
        config["add_attention"] = False
    return config


# The numbers each preset sets; `unet_config` writes out the rest.
_PRESET_NUMBERS = {
    # 28x28 allows two downsamplings (28 -> 14 -> 7); norm_num_groups=8 divides every width. Attention at 14x14.
    "unet_mnist": dict(sample_size=28, channels=1, block_out_channels=(32, 64, 64), attention_level=1, norm_num_groups=8),
    # The fast MNIST UNet: one residual block per level and no attention but the middle block's (7x7). Attention at 14x14 (196 tokens) made the
    # preset above cost 5x more per step on a CPU; at equal training time this one draws better digits (README,
    # "Time to quality").
    "unet_fast": dict(sample_size=28, channels=1, block_out_channels=(32, 64, 64), attention_level=None, layers_per_block=1,
                      norm_num_groups=8),
    # Half unet_fast's width at 28x28 and 14x14, where a CPU step spends most of its time: 1.6x the steps per minute,
    # and on a 2-core CPU better digits at 5 and 10 minutes. No attention at all: the middle block's (49 tokens) took
    # a sixth of a CPU training step, its backward pass most (benchmarks/RESULTS.md, section 8).
    "unet_small": dict(sample_size=28, channels=1, block_out_channels=(16, 32, 64), attention_level=None, layers_per_block=1,
                       norm_num_groups=8, mid_attention=False),
    # Ho et al. 2020, CIFAR-10: 128 base channels, multipliers (1, 2, 2, 2), attention at 16x16,
    # two residual blocks per level, dropout 0.1 (35.7 M parameters).
    "unet_cifar10": dict(sample_size=32, channels=3, block_out_channels=(128, 256, 256, 256), attention_level=1, dropout=0.1),
    # FGVC-Aircraft (the U-Net report's second dataset) at 64x64 RGB: 64 -> 32 -> 16 -> 8, attention at 16x16, two
    # residual blocks per level (25.3 M parameters). The report's dropout (0.01) is a flag: --dropout 0.01.
    "unet_fgvc_aircraft": dict(sample_size=64, channels=3, block_out_channels=(64, 128, 256, 256), attention_level=2),
}

_BUILT = {name: unet_config(**numbers) for name, numbers in _PRESET_NUMBERS.items()}
MNIST_UNET = _BUILT["unet_mnist"]
CIFAR10_UNET = _BUILT["unet_cifar10"]
FGVC_AIRCRAFT_UNET = _BUILT["unet_fgvc_aircraft"]

UNET_PRESETS = {"unet": MNIST_UNET, **_BUILT}
