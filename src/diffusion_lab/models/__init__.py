from .coursework_cnn import CourseworkCNN
from .unet_presets import CIFAR10_UNET, FGVC_AIRCRAFT_UNET, MNIST_UNET, UNET_PRESETS

__all__ = ["CNN_VARIANTS", "CourseworkCNN", "CIFAR10_UNET", "FGVC_AIRCRAFT_UNET", "MNIST_UNET", "UNET_PRESETS", "build_model"]

# The coursework CNN's forms: `cnn` the starter code's, `cnn_large` the seeds' "more capacity" widths, `cnn_report` the
# encoder/decoder report's (time MLP 32 -> 128 -> 128 -> 16, no LayerNorm).
CNN_VARIANTS = {
    "cnn": dict(hidden_channels=(16, 32, 32, 16)),
    "cnn_large": dict(hidden_channels=(64, 128, 256, 128, 64)),
    "cnn_report": dict(hidden_channels=(16, 32, 32, 16), time_mlp_hidden_layers=2, norm="none"),
}


def build_model(name: str, sample_size: int, channels: int, num_train_timesteps: int, config_name_or_path: str | None = None,
                num_classes: int | None = None, dropout: float | None = None):
    """The denoiser/restorer for `--model` (or a UNet2DModel config file/folder).

    With `num_classes` (class-conditional training) the model embeds `num_classes + 1` labels, added to the time
    embedding: the classes, and last the null class that stands for "no label" (classifier-free guidance).
    `dropout` replaces a UNet's dropout probability (None: the preset's or config's own); the CNNs have none.
    """
    from diffusers import UNet2DModel

    class_embeds = {} if num_classes is None else {"num_class_embeds": num_classes + 1}
    unet_overrides = {} if dropout is None else {"dropout": dropout}
    if config_name_or_path is not None:
        config = UNet2DModel.load_config(config_name_or_path)
        return UNet2DModel.from_config({**config, **class_embeds, **unet_overrides})
    if name in CNN_VARIANTS:
        if dropout is not None:
            raise ValueError(f"--dropout applies to UNet2DModel presets, not to --model {name}: drop it or pick a UNet.")
        return CourseworkCNN(
            sample_size=sample_size, in_channels=channels, out_channels=channels,
            num_train_timesteps=num_train_timesteps, **CNN_VARIANTS[name], **class_embeds,
        )
    if name in UNET_PRESETS:
        preset = dict(UNET_PRESETS[name], sample_size=sample_size, in_channels=channels, out_channels=channels,
                      **class_embeds, **unet_overrides)
        return UNet2DModel(**preset)
    raise ValueError(f"--model {name!r} is unknown: choose {', '.join(CNN_VARIANTS)}, {', '.join(UNET_PRESETS)}.")
