from .coursework_cnn import CourseworkCNN
from .unet_presets import CIFAR10_UNET, MNIST_UNET, UNET_PRESETS

__all__ = ["CourseworkCNN", "CIFAR10_UNET", "MNIST_UNET", "UNET_PRESETS", "build_model"]


def build_model(name: str, sample_size: int, channels: int, num_train_timesteps: int, config_name_or_path: str | None = None):
    """The denoiser/restorer for `--model` (or a UNet2DModel config file/folder)."""
    from diffusers import UNet2DModel

    if config_name_or_path is not None:
        config = UNet2DModel.load_config(config_name_or_path)
        return UNet2DModel.from_config(config)
    if name in ("cnn", "cnn_large"):
        hidden = (16, 32, 32, 16) if name == "cnn" else (64, 128, 256, 128, 64)
        return CourseworkCNN(
            sample_size=sample_size, in_channels=channels, out_channels=channels,
            hidden_channels=hidden, num_train_timesteps=num_train_timesteps,
        )
    if name in UNET_PRESETS:
        preset = dict(UNET_PRESETS[name], sample_size=sample_size, in_channels=channels, out_channels=channels)
        return UNet2DModel(**preset)
    raise ValueError(f"--model {name!r} is unknown: choose cnn, cnn_large, {', '.join(UNET_PRESETS)}.")
