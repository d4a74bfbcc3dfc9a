from .coursework_cnn import CourseworkCNN
from .unet_presets import CIFAR10_UNET, MNIST_UNET, UNET_PRESETS

__all__ = ["CourseworkCNN", "CIFAR10_UNET", "MNIST_UNET", "UNET_PRESETS"]
