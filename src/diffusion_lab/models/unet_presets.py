"""`UNet2DModel` configurations that are known to work for our data sizes."""

# 28x28 allows two downsamplings (28 -> 14 -> 7); norm_num_groups=8 divides every width.
MNIST_UNET = dict(
    sample_size=28,
    in_channels=1,
    out_channels=1,
    block_out_channels=(32, 64, 64),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
)

# The fast MNIST UNet: one residual block per level and no attention. Attention at 14x14 (196 tokens) made the
# preset above cost 5x more per step on a CPU; at equal training time this one draws better digits (README,
# "Time to quality").
MNIST_UNET_FAST = dict(
    MNIST_UNET,
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
)

# Ho et al. 2020, CIFAR-10: 128 base channels, multipliers (1, 2, 2, 2), attention at 16x16,
# two residual blocks per level, dropout 0.1 (35.7 M parameters).
CIFAR10_UNET = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 256, 256),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    dropout=0.1,
    norm_num_groups=32,
)

# FGVC-Aircraft (the U-Net report's second dataset) at 64x64 RGB: 64 -> 32 -> 16 -> 8, attention at 16x16, two
# residual blocks per level (25.3 M parameters). The report's dropout (0.01) is a flag: --dropout 0.01.
FGVC_AIRCRAFT_UNET = dict(
    sample_size=64,
    in_channels=3,
    out_channels=3,
    block_out_channels=(64, 128, 256, 256),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=32,
)

UNET_PRESETS = {"unet": MNIST_UNET, "unet_mnist": MNIST_UNET, "unet_fast": MNIST_UNET_FAST, "unet_cifar10": CIFAR10_UNET,
                "unet_fgvc_aircraft": FGVC_AIRCRAFT_UNET}
