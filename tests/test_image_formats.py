"""Images the user actually has: every pixel format PIL opens decodes to the right intensities or is refused in one
line, huge images are refused before decoding, and the decoded cache follows content (issue 17, section 5)."""

import os

import numpy as np
import pytest
from PIL import Image

from diffusion_lab.data import DataError, load_image_caches
from diffusion_lab.evaluation.image_sources import load_png_folder

GRAY = 100  # every test image is one flat intensity, so that resizing keeps it exactly


def flat_images():
    """(file name, image, the 8-bit gray it must decode to): formats and sizes a user may have. (A palette image
    makes a dataset RGB when it comes first: see the colour test.)"""
    return [
        ("l.png", Image.new("L", (16, 16), GRAY), GRAY),
        ("sixteen_bit.png", Image.fromarray(np.full((30, 17), GRAY * 257, np.uint16)), GRAY),  # I;16: 25700 -> 100
        ("sixteen_bit.tiff", Image.fromarray(np.full((8, 8), 65535, np.uint16)), 255),
        ("one_bit.png", Image.new("1", (16, 16), 1), 255),
        ("gray_alpha.png", Image.new("LA", (9, 40), (GRAY, 0)), GRAY),  # alpha dropped, the stored gray kept
        ("gray.jpg", Image.new("L", (64, 64), GRAY), GRAY),
        ("gray.bmp", Image.new("L", (16, 16), GRAY), GRAY),
    ]


def test_grayscale_formats_decode_to_their_intensities(tmp_path):
    (tmp_path / "images").mkdir()
    for name, image, _ in flat_images():
        image.save(tmp_path / "images" / name)
    train, validation = load_image_caches(train_data_dir=str(tmp_path / "images"), resolution=16, validation_fraction=0.2)
    decoded = sorted(int(image.mean().round()) for image in [*train.images, *validation.images])
    assert train.images.shape[1:] == (1, 16, 16)
    assert decoded == sorted(expected for _, _, expected in flat_images())
    assert all(len(np.unique(image)) == 1 for image in [*train.images, *validation.images])  # flat stays flat
    # The evaluation command reads PNG folders the same way (a palette image is its colours, not its indices).
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    Image.new("LA", (16, 16), (GRAY, 0)).save(pngs / "0.png")  # the first sets the mode: grayscale
    Image.fromarray(np.full((16, 16), GRAY * 257, np.uint16)).save(pngs / "1.png")
    Image.new("1", (16, 16), 1).save(pngs / "2.png")
    Image.new("L", (16, 16), GRAY).save(pngs / "3.png")
    palette = Image.new("P", (16, 16))
    palette.putpalette([GRAY, GRAY, GRAY] * 256)
    palette.save(pngs / "palette.png")
    loaded = load_png_folder(pngs)
    assert loaded.shape[1] == 1 and sorted(int(image.float().mean()) for image in loaded) == [GRAY] * 4 + [255]


def test_colour_formats_decode_to_their_intensities(tmp_path):
    colour = (10, 120, 230)
    palette = Image.new("P", (16, 16))
    palette.putpalette([*colour] * 256)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (16, 16), colour).save(folder / "a_rgb.png")  # the first image makes the data RGB
    Image.new("RGBA", (24, 16), (*colour, 0)).save(folder / "rgba.png")
    palette.save(folder / "palette.png")
    Image.new("RGB", (16, 16), colour).convert("CMYK").save(folder / "cmyk.tiff")
    Image.new("RGB", (20, 20), colour).save(folder / "lossless.webp", lossless=True)
    Image.fromarray(np.full((16, 16), 200 * 257, np.uint16)).save(folder / "sixteen_bit.png")  # gray in RGB data
    train, validation = load_image_caches(train_data_dir=str(folder), resolution=16, validation_fraction=0.2)
    pixels = sorted(tuple(int(v) for v in image[:, 0, 0]) for image in [*train.images, *validation.images])
    assert pixels == sorted([colour] * 5 + [(200, 200, 200)])


@pytest.mark.parametrize("image, message", [
    (Image.fromarray(np.full((8, 8), 0.5, np.float32)), "is a 32-bit float image (mode F) with no defined intensity range: convert it to 8- or 16-bit"),
    (Image.fromarray(np.full((8, 8), 70000, np.int32)), "is a 32-bit integer image (mode I) with no defined intensity range"),
])
def test_images_without_a_defined_range_are_refused_in_one_line(image, message, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("L", (8, 8), GRAY).save(folder / "0.png")
    image.save(folder / "1.tiff")
    with pytest.raises(DataError, match=r"^image \d \(.*1\.tiff\) " + message.replace("(", r"\(").replace(")", r"\)")):
        load_image_caches(train_data_dir=str(folder), resolution=8, validation_fraction=0.5)


def test_an_image_too_large_to_decode_safely_is_refused_before_decoding(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("L", (16, 16), GRAY).save(folder / "0.png")
    Image.new("L", (40, 40), GRAY).save(folder / "1.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,600 pixels: above the limit, below twice the limit
    with pytest.raises(DataError, match=r"^image \d \(.*1\.png\) has more than 1,000 pixels: decoding it could exhaust memory"):
        load_image_caches(train_data_dir=str(folder), resolution=16, validation_fraction=0.5)


def test_the_decoded_cache_follows_content_not_modification_times(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(4):
        Image.new("L", (16, 16), 10 * index).save(folder / f"{index}.png")
    first = load_image_caches(train_data_dir=str(folder), resolution=16, validation_fraction=0.25)
    assert sorted(int(image.max()) for cache in first for image in cache.images) == [0, 10, 20, 30]
    path = folder / "2.png"
    stat = path.stat()
    Image.new("L", (16, 16), 99).save(path)  # same name, same size on disk, same modification time
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    second = load_image_caches(train_data_dir=str(folder), resolution=16, validation_fraction=0.25)
    assert sorted(int(image.max()) for cache in second for image in cache.images) == [0, 10, 30, 99]
