"""Image data: load a dataset once, decode it into a uint8 tensor cache, serve shuffled shards.

Decoding PIL images per item is what makes diffusers' example trainer slow on small models, so every image is
decoded exactly once into a `(N, C, H, W)` uint8 array stored as a `.npy` file and read memory-mapped: data larger
than RAM works, and a second run starts instantly. Batches are gathered from that array; augmentation (horizontal
flips) happens on tensors. MNIST ships inside the package (`mnist/`), so the defaults need no network.
"""

from .batches import ShardedBatches, random_flip
from .decoding import read_image
from .image_cache import ImageCache, keep_on_device, load_image_caches
from .sources import SHIPPED_MNIST, DataError

__all__ = ["SHIPPED_MNIST", "DataError", "ImageCache", "ShardedBatches", "keep_on_device", "load_image_caches", "random_flip", "read_image"]
