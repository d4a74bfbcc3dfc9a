from .coursework_cnn import CourseworkCNN
from .unet_presets import CIFAR10_UNET, FGVC_AIRCRAFT_UNET, MNIST_UNET, UNET_PRESETS

__all__ = ["CNN_VARIANTS", "CourseworkCNN", "CIFAR10_UNET", "FGVC_AIRCRAFT_UNET", "MNIST_UNET", "UNET_PRESETS", "build_model", "small_label_embedding"]

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
        model = UNet2DModel.from_config({**config, **class_embeds, **unet_overrides})
    elif name in CNN_VARIANTS:
        if dropout is not None:
            raise ValueError(f"--dropout applies to UNet2DModel presets, not to --model {name}: drop it or pick a UNet.")
        model = CourseworkCNN(
            sample_size=sample_size, in_channels=channels, out_channels=channels,
            num_train_timesteps=num_train_timesteps, **CNN_VARIANTS[name], **class_embeds,
        )
    elif name in UNET_PRESETS:
        preset = dict(UNET_PRESETS[name], sample_size=sample_size, in_channels=channels, out_channels=channels,
                      **class_embeds, **unet_overrides)
        model = UNet2DModel(**preset)
    else:
        raise ValueError(f"--model {name!r} is unknown: choose {', '.join(CNN_VARIANTS)}, {', '.join(UNET_PRESETS)}.")
    return model


LABEL_EMBEDDING_STD = 0.02  # DiT's (Peebles & Xie 2023)


def small_label_embedding(model) -> None:
    """Draw the label embedding from N(0, 0.02^2), as DiT does, not torch's N(0, 1): at N(0, 1) it is 7x the time
    embedding of `unet_small` at initialisation and drowns the timestep early in training (cluster-conditional runs;
    benchmarks/RESULTS.md, section 21). Class-conditional runs keep torch's: where the label is all a model has (cold
    diffusion from a blank start), a small one is learnt too slowly for a short run."""
    import torch

    with torch.no_grad():
        model.class_embedding.weight.normal_(0.0, LABEL_EMBEDDING_STD)
