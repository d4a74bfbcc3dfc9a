import numpy as np
import pytest
import torch
from helpers import make_folder

from diffusion_lab.data import DataError, ShardedBatches, load_image_caches, random_flip
from diffusion_lab.sampling import image_grid


def test_shipped_mnist_stays_grayscale_in_minus_one_to_one():
    train, validation = load_image_caches(max_train_samples=64)
    assert train.images.shape == (64, 1, 28, 28) and train.images.dtype == np.uint8
    assert len(validation) == 6  # the test split, capped with the subset
    batch = train.batch(np.arange(64))
    assert batch.min() == -1 and batch.max() == 1


def test_rgb_folder_stays_rgb_resized_and_center_cropped(tmp_path):
    folder = make_folder(tmp_path / "images")
    train, validation = load_image_caches(train_data_dir=str(folder), resolution=16, center_crop=True, validation_fraction=0.25)
    assert train.images.shape[1:] == (3, 16, 16)
    assert len(train) + len(validation) == 12 and len(validation) == 3  # held-out fraction


def test_shards_are_disjoint_and_cover_the_epoch():
    shards = [ShardedBatches(100, 10, 2, rank, seed=0) for rank in range(2)]
    seen = np.concatenate([shard.indices(epoch=3, batch_in_epoch=b) for shard in shards for b in range(5)])
    assert sorted(seen) == list(range(100))
    assert not np.array_equal(shards[0].indices(0, 0), shards[0].indices(1, 0))  # reshuffled per epoch


def test_random_flip_flips_some_images_exactly():
    images = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).reshape(2, 1, 2, 3).repeat(16, 1, 1, 1)
    flipped = random_flip(images, torch.Generator().manual_seed(0))
    same = (flipped == images).flatten(1).all(1)
    mirrored = (flipped == images.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_grid_has_one_tile_per_image():
    grid = image_grid(torch.zeros(5, 1, 4, 4))
    assert grid.mode == "L" and grid.size == (3 * 6 + 2, 2 * 6 + 2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(dataset_name="/no/such/folder"), "does not exist"),
    (dict(image_column="pixels"), "column 'pixels' not found"),
    (dict(resolution=4), "too small"),
])
def test_bad_data_arguments_are_refused(kwargs, message):
    with pytest.raises(DataError, match=message):
        load_image_caches(max_train_samples=32, **kwargs)


def test_corrupt_image_is_named(tmp_path):
    folder = make_folder(tmp_path / "images", count=4)
    (folder / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match="cannot be decoded"):
        load_image_caches(train_data_dir=str(folder), resolution=16, validation_fraction=0.25)
