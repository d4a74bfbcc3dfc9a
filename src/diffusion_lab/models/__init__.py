from .coursework_cnn import CourseworkCNN
from .unet_presets import CIFAR10_UNET, MNIST_UNET, UNET_PRESETS

__all__ = ["CourseworkCNN", "CIFAR10_UNET", "MNIST_UNET", "UNET_PRESETS", "build_model"]


def build_model(name: str, sample_size: int, channels: int, num_train_timesteps: int, config_name_or_path: str | None = None,
                num_classes: int | None = None):
    """The denoiser/restorer for `--model` (or a UNet2DModel config file/folder).

    With `num_classes` (class-conditional training) the model embeds `num_classes + 1` labels, added to the time
    embedding: the classes, and last the null class that stands for "no label" (classifier-free guidance).
    """
    from diffusers import UNet2DModel

    class_embeds = {} if num_classes is None else {"num_class_embeds": num_classes + 1}
    if config_name_or_path is not None:
        config = UNet2DModel.load_config(config_name_or_path)
        return UNet2DModel.from_config({**config, **class_embeds})
    if name in ("cnn", "cnn_large"):
        hidden = (16, 32, 32, 16) if name == "cnn" else (64, 128, 256, 128, 64)
        return CourseworkCNN(
            sample_size=sample_size, in_channels=channels, out_channels=channels,
            hidden_channels=hidden, num_train_timesteps=num_train_timesteps, **class_embeds,
        )
    if name in UNET_PRESETS:
        preset = dict(UNET_PRESETS[name], sample_size=sample_size, in_channels=channels, out_channels=channels, **class_embeds)
        return UNet2DModel(**preset)
    raise ValueError(f"--model {name!r} is unknown: choose cnn, cnn_large, {', '.join(UNET_PRESETS)}.")
