"""Cold-diffusion degradations D(x, t): definitions checked against hand computation and loop references."""

import importlib.util
import inspect
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from diffusion_lab.data import SHIPPED_MNIST
from diffusion_lab.degradations import (
    DEGRADATIONS,
    DegradationOptions,
    GaussianBlur,
    GrowingMask,
    Pixelation,
    RowColumnAveraging,
    build_degradation,
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
def test_fully_averaged_images_are_the_row_or_column_means_with_separate_groups(orientation):
    degradation = RowColumnAveraging(sample_size=(12, 9), orientation=orientation, group_size=5, group_mode="separate")
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
    expected_lengths = [group_size] * (length // group_size) + ([length % group_size] if length % group_size else [])
    for group_mode in ("band", "separate"):
        degradation = RowColumnAveraging(sample_size=(length, 3), group_size=group_size, group_mode=group_mode)
        assert degradation.num_levels == levels
        assert sorted(len(group) for group in degradation.groups) == sorted(expected_lengths)


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


@pytest.mark.parametrize(("orientation", "order", "group_size", "group_mode"), [
    ("rows", "random", 1, "band"), ("columns", "inside_out", 3, "band"), ("rows", "outside_in", 4, "band"),
    ("columns", "inside_out", 3, "separate"), ("rows", "random", 4, "separate"),
])
def test_vectorised_averaging_equals_the_loop_reference(orientation, order, group_size, group_mode):
    degrade_loop = load_loop_reference()
    degradation = RowColumnAveraging(sample_size=(16, 20), orientation=orientation, order=order, group_size=group_size,
                                     seed=5, group_mode=group_mode)
    images = random_images(n=12, channels=2, size=(16, 20), seed=1)
    levels = torch.randint(0, degradation.num_levels + 1, (12,), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(degradation.degrade(images, levels), degrade_loop(degradation, images, levels))


def report_bands_literal(images, levels, group_size, band_order, orientation):
    """The cold-diffusion report's grouped averaging, written out: band k holds rows (columns) k*g .. k*g+g-1; at
    level t the first t bands of `band_order` are each replaced by the mean of all their pixels, per channel."""
    out = images.clone()
    for n in range(images.shape[0]):
        for band in band_order[: int(levels[n])]:
            for c in range(images.shape[1]):
                if orientation == "rows":
                    first, last = band * group_size, min(band * group_size + group_size, images.shape[2])
                    out[n, c, first:last, :] = images[n, c, first:last, :].mean()
                else:
                    first, last = band * group_size, min(band * group_size + group_size, images.shape[3])
                    out[n, c, :, first:last] = images[n, c, :, first:last].mean()
    return out


@pytest.mark.parametrize(("orientation", "order", "size", "band_order"), [
    ("rows", "outside_in", (28, 28), [0, 6, 1, 5, 2, 4, 3]),  # 7 bands of 4 rows: bands 1, 7, 2, 6, ...
    ("columns", "inside_out", (28, 28), [3, 4, 2, 5, 1, 6, 0]),
    ("rows", "inside_out", (30, 9), [3, 4, 2, 5, 1, 6, 0, 7]),  # 8 bands, the last of 2 rows
])
def test_grouped_averaging_is_the_reports_bands(orientation, order, size, band_order):
    degradation = RowColumnAveraging(sample_size=size, orientation=orientation, order=order, group_size=4)
    assert degradation.num_levels == len(band_order)
    images = random_images(n=len(band_order) + 1, channels=2, size=size, seed=3)
    levels = torch.arange(len(band_order) + 1)  # every level 0..T once
    torch.testing.assert_close(degradation.degrade(images, levels), report_bands_literal(images, levels, 4, band_order, orientation))


def test_random_band_order_is_a_seeded_permutation_of_the_bands():
    degradation = RowColumnAveraging(order="random", group_size=4, seed=2)
    band_order = degradation.averaging_order
    assert sorted(band_order) == list(range(7)) and band_order != list(range(7))
    images, levels = random_images(n=8), torch.arange(8)
    torch.testing.assert_close(degradation.degrade(images, levels), report_bands_literal(images, levels, 4, band_order, "rows"))


def test_fully_degraded_digit_has_7_row_values_with_bands_and_28_with_separate_rows():
    import io

    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    rows = pq.read_table(SHIPPED_MNIST / "test-00000-of-00001.parquet").slice(0, 5)
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(row["bytes"]))) for row in rows.column("image").to_pylist()])
    digits = torch.from_numpy(pixels).float().div(127.5).sub(1).unsqueeze(1)
    band = RowColumnAveraging(group_size=4).degrade(digits, 7)
    separate = RowColumnAveraging(group_size=4, group_mode="separate").degrade(digits, 7)
    for n in range(5):
        bands = band[n, 0].reshape(7, 4 * 28)  # band k: rows 4k..4k+3
        assert (bands == bands[:, :1]).all()  # one value per band (blank top and bottom bands share -1 here)
        torch.testing.assert_close(bands[:, 0], digits[n, 0].reshape(7, 4 * 28).mean(dim=1))
        torch.testing.assert_close(separate[n, 0], digits[n, 0].mean(dim=-1, keepdim=True).expand(28, 28))
        assert len(torch.unique(separate[n, 0, :, 0])) > 7
    noise = RowColumnAveraging(group_size=4).degrade(random_images(n=3), 7)
    assert [len(torch.unique(image)) for image in noise] == [7, 7, 7]  # exactly 7 distinct row values
    noise = RowColumnAveraging(group_size=4, group_mode="separate").degrade(random_images(n=3), 7)
    assert [len(torch.unique(image)) for image in noise] == [28, 28, 28]


@pytest.mark.parametrize("orientation", ["rows", "columns"])
def test_band_start_statistics_are_one_value_per_band_and_rebuild_the_image(orientation):
    degradation = RowColumnAveraging(sample_size=(12, 10), orientation=orientation, group_size=4, order="outside_in")
    images = random_images(channels=3, size=(12, 10))
    degraded = degradation.degrade(images, degradation.num_levels)
    statistics = degradation.start_statistics(degraded)
    assert statistics.shape == (6, 3 * degradation.num_levels)
    torch.testing.assert_close(degradation.start_from_statistics(statistics, channels=3), degraded)


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


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_registered_options_are_exactly_the_class_config_options(name):
    """The registry's data (which options apply to which degradation) must not drift from the classes."""
    entry = DEGRADATIONS[name]
    config = set(inspect.signature(entry.degradation_class.__init__).parameters) - {"self", "sample_size"}
    assert set(entry.fixed) <= config
    assert entry.options == config - set(entry.fixed)


def test_every_option_applies_to_some_degradation_and_reaches_its_config():
    assert set().union(*(entry.options for entry in DEGRADATIONS.values())) == set(DegradationOptions.__dataclass_fields__)
    rows = build_degradation("rows", DegradationOptions(seed=3, group_size=4), sample_size=(12, 8))
    assert (rows.config.seed, rows.config.group_size, rows.config.orientation, tuple(rows.config.sample_size)) == (3, 4, "rows", (12, 8))
    assert build_degradation("pixelate", DegradationOptions(block_sizes=[2, 4])).config.block_sizes == [2, 4]
    assert public_config(build_degradation("blur")) == public_config(GaussianBlur())  # None: the class's default
    with pytest.raises(ValueError, match="option seed does not apply to degradation 'blur'"):
        build_degradation("blur", DegradationOptions(seed=3))


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
    with pytest.raises(ValueError, match="group_mode"):
        RowColumnAveraging(group_mode="stripes")
    with pytest.raises(ValueError, match="kernel_size"):
        GaussianBlur(kernel_size=4)
    with pytest.raises(ValueError, match="block_sizes"):
        Pixelation(block_sizes=[])
    with pytest.raises(ValueError, match="rows, columns, blur"):
        build_degradation("noise")
    assert math.isfinite(GaussianBlur().degrade(torch.zeros(1, 1, 28, 28), 20).sum())
