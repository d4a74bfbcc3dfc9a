"""Cold-diffusion degradations D(x, t): definitions checked against hand computation and loop references."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from diffusion_lab.degradations import (
    DEGRADATIONS, GaussianBlur, GrowingMask, Pixelation, RowColumnAveraging, build_degradation,
)

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_degradation.py"


def load_loop_reference():
    spec = importlib.util.spec_from_file_location("bench_degradation", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.degrade_loop


def random_images(n=6, channels=1, size=(28, 28), seed=0):
    return torch.rand(n, channels, *size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def public_config(degradation):
    return {key: value for key, value in json.loads(degradation.to_json_string()).items() if not key.startswith("_")}


ALL_DEGRADATIONS = [
    RowColumnAveraging(orientation="rows"),
    RowColumnAveraging(orientation="columns", order="outside_in", group_size=4),
    GaussianBlur(),
    Pixelation(),
    GrowingMask(),
]


@pytest.mark.parametrize("degradation", ALL_DEGRADATIONS, ids=lambda d: type(d).__name__)
def test_level_zero_is_identity_and_levels_are_per_image(degradation):
    images = random_images(channels=3)
    assert torch.equal(degradation.degrade(images, 0), images)
    levels = torch.tensor([0, 1, 2, degradation.num_levels - 1, degradation.num_levels, 1])
    batched = degradation.degrade(images, levels)
    for n, level in enumerate(levels.tolist()):
        torch.testing.assert_close(batched[n : n + 1], degradation.degrade(images[n : n + 1], level))


@pytest.mark.parametrize("orientation", ["rows", "columns"])
def test_fully_averaged_images_are_the_row_or_column_means(orientation):
    degradation = RowColumnAveraging(sample_size=(12, 9), orientation=orientation, group_size=5)
    images = random_images(channels=3, size=(12, 9))
    degraded = degradation.degrade(images, degradation.num_levels)
    axis = -1 if orientation == "rows" else -2
    means = images.mean(dim=axis, keepdim=True)
    assert torch.equal(degraded, means.expand_as(images))
    assert degraded.std(dim=axis).max() == 0
    # The start statistics are those means and give the fully degraded image back exactly.
    statistics = degradation.start_statistics(degraded)
    assert statistics.shape == (6, 3 * images.shape[axis - 1 if axis == -1 else -1])
    torch.testing.assert_close(degradation.start_from_statistics(statistics, channels=3), degraded)


@pytest.mark.parametrize(("length", "group_size", "levels"), [(28, 1, 28), (28, 4, 7), (28, 5, 6), (28, 28, 1), (7, 2, 4)])
def test_group_sizes_give_the_stated_number_of_levels(length, group_size, levels):
    degradation = RowColumnAveraging(sample_size=(length, 3), group_size=group_size)
    assert degradation.num_levels == levels
    assert [len(group) for group in degradation.groups] == [group_size] * (length // group_size) + ([length % group_size] if length % group_size else [])


def test_orders_match_their_definitions_and_visit_every_row_once():
    one_based = lambda order: [index + 1 for index in RowColumnAveraging(order=order).averaging_order]  # noqa: E731
    assert one_based("outside_in")[:6] == [1, 28, 2, 27, 3, 26]
    assert one_based("inside_out")[:6] == [14, 15, 13, 16, 12, 17]
    for length in (1, 2, 7, 28):
        for order in ("random", "outside_in", "inside_out"):
            degradation = RowColumnAveraging(sample_size=length, order=order, seed=3)
            assert sorted(degradation.averaging_order) == list(range(length))
            assert sorted(sum(degradation.groups, [])) == list(range(length))
    random_orders = {seed: RowColumnAveraging(order="random", seed=seed).averaging_order for seed in (0, 1)}
    assert random_orders[0] != random_orders[1]
    assert RowColumnAveraging(order="random", seed=0).averaging_order == random_orders[0]


@pytest.mark.parametrize(("orientation", "order", "group_size"), [("rows", "random", 1), ("columns", "inside_out", 3), ("rows", "outside_in", 4)])
def test_vectorised_averaging_equals_the_loop_reference(orientation, order, group_size):
    degrade_loop = load_loop_reference()
    degradation = RowColumnAveraging(sample_size=(16, 20), orientation=orientation, order=order, group_size=group_size, seed=5)
    images = random_images(n=12, channels=2, size=(16, 20), seed=1)
    levels = torch.randint(0, degradation.num_levels + 1, (12,), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(degradation.degrade(images, levels), degrade_loop(degradation, images, levels))


def test_blur_compounds_successive_gaussian_blurs():
    degradation = GaussianBlur(sample_size=(20, 16), num_levels=4, kernel_size=5, kernel_std=0.8, kernel_std_growth=0.5)
    images = random_images(n=2, channels=2, size=(20, 16))
    expected = images
    for step in range(degradation.num_levels):
        std = 0.8 + 0.5 * step
        kernel_1d = torch.exp(-0.5 * (torch.arange(-2, 3, dtype=torch.float64) / std) ** 2)
        kernel_2d = torch.outer(kernel_1d, kernel_1d) / kernel_1d.sum() ** 2
        padded = F.pad(expected.double(), (2, 2, 2, 2), mode="circular")
        expected = F.conv2d(padded, kernel_2d.expand(2, 1, 5, 5), groups=2).float()
        torch.testing.assert_close(degradation.degrade(images, step + 1), expected, atol=1e-5, rtol=1e-5)


def test_pixelation_is_block_averaging_then_nearest_upsampling():
    degradation = Pixelation(sample_size=32, block_sizes=[2, 4, 8])
    images = random_images(channels=3, size=(32, 32))
    for level, block in enumerate([2, 4, 8], start=1):
        expected = F.interpolate(F.avg_pool2d(images, block), scale_factor=block, mode="nearest")
        torch.testing.assert_close(degradation.degrade(images, level), expected)
    # 28 is not a multiple of 8: the last block holds the remaining 4 pixels, and statistics invert exactly.
    degradation = Pixelation(sample_size=28, block_sizes=[2, 4, 8])
    fully = degradation.degrade(random_images(), 3)
    assert torch.allclose(fully[..., 24:, 24:], random_images()[..., 24:, 24:].mean(dim=(-2, -1), keepdim=True))
    torch.testing.assert_close(degradation.start_from_statistics(degradation.start_statistics(fully), channels=1), fully)


def test_mask_grows_ring_by_ring_to_the_whole_image():
    degradation = GrowingMask(sample_size=28, fill_value=-1.0)
    images = random_images()
    assert degradation.num_levels == 14
    for level in range(15):
        masked = degradation.degrade(images, level) == -1.0
        assert masked.sum(dim=(1, 2, 3)).tolist() == [(2 * level) ** 2] * 6
        assert masked[:, :, 14 - level : 14 + level, 14 - level : 14 + level].all()
    assert GrowingMask(sample_size=28, rings_per_level=4).num_levels == 4


@pytest.mark.parametrize("degradation", [GaussianBlur(), Pixelation(), GrowingMask()], ids=lambda d: type(d).__name__)
def test_blur_pixelation_and_mask_move_away_from_x_monotonically(degradation):
    images = random_images(n=8)
    distances = torch.stack([(degradation.degrade(images, t) - images).flatten(1).norm(dim=1) for t in range(degradation.num_levels + 1)])
    steps = distances[1:] - distances[:-1]
    assert (steps >= -1e-5).all(), steps.min()
    assert (distances[-1] > distances[1]).all()


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_config_round_trip_rebuilds_the_same_degradation(name, tmp_path):
    degradation = build_degradation(name, sample_size=(12, 10))
    degradation.save_pretrained(tmp_path)
    loaded = type(degradation).from_pretrained(tmp_path)
    images = random_images(size=(12, 10))
    levels = torch.arange(6) % (degradation.num_levels + 1)
    assert public_config(loaded) == public_config(degradation)
    assert torch.equal(loaded.degrade(images, levels), degradation.degrade(images, levels))


def test_bad_input_gives_one_clear_error():
    degradation = RowColumnAveraging()
    with pytest.raises(ValueError, match="sample_size"):
        degradation.degrade(torch.zeros(1, 1, 32, 32), 1)
    with pytest.raises(ValueError, match="0..28"):
        degradation.degrade(torch.zeros(2, 1, 28, 28), torch.tensor([0, 29]))
    with pytest.raises(ValueError, match="0..28"):
        degradation.degrade(torch.zeros(1, 1, 28, 28), 1.5)
    with pytest.raises(ValueError, match="orientation"):
        RowColumnAveraging(orientation="diagonal")
    with pytest.raises(ValueError, match="order"):
        RowColumnAveraging(order="sorted")
    with pytest.raises(ValueError, match="group_size"):
        RowColumnAveraging(group_size=29)
    with pytest.raises(ValueError, match="kernel_size"):
        GaussianBlur(kernel_size=4)
    with pytest.raises(ValueError, match="block_sizes"):
        Pixelation(block_sizes=[])
    with pytest.raises(ValueError, match="rows, columns, blur"):
        build_degradation("noise")
    assert math.isfinite(GaussianBlur().degrade(torch.zeros(1, 1, 28, 28), 20).sum())
