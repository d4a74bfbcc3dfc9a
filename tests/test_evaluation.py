"""Sample-quality metrics against known cases (issue 5, section 5)."""

import json
import math

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from helpers import TINY_RUN
from PIL import Image

from diffusion_lab import CourseworkCNN
from diffusion_lab.commands import train_ddpm
from diffusion_lab.commands.evaluate import main
from diffusion_lab.degradations import RowColumnAveraging
from diffusion_lab.evaluation import (
    DigitClassifier,
    evaluate_images,
    to_signed_unit_range,
)
from diffusion_lab.evaluation.digit_classifier import (
    SHIPPED_WEIGHTS,
    DigitFeatures,
    DigitLogits,
)
from diffusion_lab.evaluation.image_sources import load_dataset_images
from diffusion_lab.evaluation.metrics import (
    frechet_distances,
    inception_score,
    inception_unavailable_reason,
    paired_psnr_ssim,
    psnr_ssim_against_references,
)
from diffusion_lab.evaluation.plot_run import plot_run
from diffusion_lab.evaluation.train_digit_classifier import (
    accuracy,
    to_model_range,
    train_digit_classifier,
)
from diffusion_lab.pipelines import ColdDiffusionPipeline
from diffusion_lab.pipelines.export import save_pipeline
from diffusion_lab.run_files import read_metrics
from diffusion_lab.sampling import open_pipeline, restore


@pytest.fixture(scope="module")
def mnist_test():
    """The shipped MNIST test split: uint8 (10000, 1, 28, 28) and labels."""
    return load_dataset_images(split="test", label_column="label")


@pytest.fixture(scope="module")
def classifier():
    return DigitClassifier.from_file()


def test_shipped_classifier_reaches_its_recorded_accuracy(mnist_test, classifier):
    images, labels = mnist_test
    record = json.loads(SHIPPED_WEIGHTS.with_suffix(".json").read_text())
    assert record["training"]["test_accuracy"] >= 0.99
    assert accuracy(classifier, images, labels) == pytest.approx(record["training"]["test_accuracy"], abs=1e-3)


def test_classifier_training_is_deterministic(mnist_test, tmp_path):
    images, labels = mnist_test[0][:128], mnist_test[1][:128]
    first = train_digit_classifier(images, labels, num_epochs=1, batch_size=64, seed=3)
    second = train_digit_classifier(images, labels, num_epochs=1, batch_size=64, seed=3)
    other_seed = train_digit_classifier(images, labels, num_epochs=1, batch_size=64, seed=4)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert not torch.equal(first.head.weight, other_seed.head.weight)
    # The saved file reproduces the weights exactly.
    first.save(tmp_path / "classifier.safetensors", {"seed": 3})
    reloaded = DigitClassifier.from_file(tmp_path / "classifier.safetensors")
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name


@pytest.mark.parametrize(
    "values, declared, message",
    [
        (torch.rand(8, 1, 28, 28), "[-1,1]", "look like \\[0,1\\]"),  # [0,1] images passed as [-1,1]
        (torch.rand(8, 1, 28, 28) * 255, "[0,1]", "look like \\[0,255\\]"),
        (torch.rand(8, 1, 28, 28) * 2 - 1, "[0,1]", "look like \\[-1,1\\]"),
        (torch.rand(8, 1, 28, 28) * 3 - 2, "[-1,1]", "below -1"),
        (torch.randint(0, 2, (8, 1, 28, 28), dtype=torch.uint8), "uint8", "0/1 masks"),
        (torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8), "[0,1]", "declare them 'uint8'"),
        (torch.rand(8, 1, 28, 28), "uint8", "declare their float range"),
        (torch.full((8, 1, 28, 28), float("nan")), "[-1,1]", "NaN"),
        (torch.rand(8, 28, 28), "[0,1]", "\\(N, C, H, W\\)"),
        (torch.rand(8, 1, 28, 28), "0-1", "Unknown pixel range"),
    ],
)
def test_wrong_pixel_range_is_refused(values, declared, message):
    with pytest.raises(ValueError, match=message):
        to_signed_unit_range(values, declared)


def test_declared_ranges_map_to_signed_unit_range():
    uint8 = torch.tensor([0, 255, 51], dtype=torch.uint8).reshape(1, 1, 1, 3).repeat(2, 1, 1, 1)
    unit = torch.tensor([0.0, 1.0, 0.2]).reshape(1, 1, 1, 3).repeat(2, 1, 1, 1)
    expected = torch.tensor([-1.0, 1.0, -0.6]).reshape(1, 1, 1, 3).repeat(2, 1, 1, 1)
    for images, declared in ((uint8, "uint8"), (unit, "[0,1]"), (expected, "[-1,1]")):
        converted, check = to_signed_unit_range(images, declared)
        torch.testing.assert_close(converted, expected)
        assert check["declared"] == declared and check["min"] == images.min().item()


def test_identical_sets_give_zero_distance_and_real_subsets_the_floor(mnist_test, classifier):
    images = to_model_range(mnist_test[0][:1000])
    first_half, second_half = images[:500], images[500:]
    distances = frechet_distances(
        DigitFeatures(classifier), first_half, {"identical": first_half, "real": second_half}, batch_size=250
    )
    assert abs(distances["identical"]) < 1e-3
    assert 0.1 < distances["real"] < 50


def test_disjoint_digit_classes_give_a_large_distance(mnist_test, classifier):
    images, labels = to_model_range(mnist_test[0]), mnist_test[1]
    low_digits, high_digits, all_digits = images[labels < 5][:400], images[labels >= 5][:400], images[-400:]
    distances = frechet_distances(
        DigitFeatures(classifier), all_digits, {"low": low_digits, "high": high_digits}, batch_size=400
    )
    floor = frechet_distances(DigitFeatures(classifier), images[:400], {"real": images[400:800]})["real"]
    assert distances["low"] > 10 * floor and distances["high"] > 10 * floor
    between = frechet_distances(DigitFeatures(classifier), low_digits, {"high": high_digits})["high"]
    assert between > 20 * floor


def test_classifier_inception_score_counts_effective_classes(mnist_test, classifier):
    images, labels = to_model_range(mnist_test[0]), mnist_test[1]
    assert inception_score(DigitLogits(classifier), images[labels == 1][:300]) < 1.1
    all_classes = inception_score(DigitLogits(classifier), images[:1000])
    assert 9 < all_classes <= 10
    rng_state = torch.get_rng_state()
    inception_score(DigitLogits(classifier), images[:100])
    assert torch.equal(torch.get_rng_state(), rng_state), "evaluation must not consume the global RNG"


def test_inception_score_does_not_depend_on_the_global_rng(mnist_test, classifier):
    """torchmetrics' InceptionScore shuffles the images with the global generator; the order changes the sums in the
    7th significant digit (global seed 3 did, before the draw was seeded): the same images give the same score."""
    images = to_model_range(mnist_test[0][:1000])
    scores = set()
    for global_seed in range(5):
        torch.manual_seed(global_seed)
        scores.add(inception_score(DigitLogits(classifier), images))
    assert len(scores) == 1, scores


def test_psnr_ssim_identical_and_by_hand():
    images = torch.rand(3, 1, 28, 28) * 1.6 - 0.8
    psnr, ssim = paired_psnr_ssim(images, images)
    assert torch.isinf(psnr).all() and (psnr > 0).all()
    torch.testing.assert_close(ssim, torch.ones(3))
    # A constant error of 0.1 on the [-1, 1] scale (peak-to-peak 2): PSNR = 10 log10(2^2 / 0.1^2).
    psnr, ssim = paired_psnr_ssim(images + 0.1, images)
    torch.testing.assert_close(psnr, torch.full((3,), 10 * math.log10(4 / 0.01)))
    assert (ssim < 1).all()


def test_psnr_ssim_against_references_averages_every_pair():
    images, references = torch.rand(5, 1, 28, 28) * 2 - 1, torch.rand(3, 1, 28, 28) * 2 - 1
    # batch_size 1 -> chunks of 2 images: exercises the chunked pairing.
    psnr, ssim = psnr_ssim_against_references(images, references, batch_size=1)
    pairs = [paired_psnr_ssim(image[None], reference[None]) for image in images for reference in references]
    assert psnr == pytest.approx(torch.cat([p for p, _ in pairs]).mean().item(), rel=1e-5)
    assert ssim == pytest.approx(torch.cat([s for _, s in pairs]).mean().item(), rel=1e-5)


def test_evaluate_images_reports_every_metric_with_its_floor(mnist_test):
    images, labels = mnist_test
    reference = images[:1000]
    ones = images[1000:][labels[1000:] == 1][:40]
    result = evaluate_images(
        ones, reference, images_range="uint8", reference_range="uint8", originals=ones, originals_range="uint8"
    )
    assert result["num_samples"] == result["num_reference"] == 40
    for name in ("digit_fd", "digit_is", "digit_confidence", "psnr", "ssim"):
        assert math.isfinite(result[name]) and math.isfinite(result[name + "_real"]), name
    assert result["digit_fd"] > result["digit_fd_real"]
    assert result["digit_is"] < 1.2 < 6 < result["digit_is_real"]
    assert result["digit_class_1_fraction"] > 0.95
    assert sum(result[f"digit_class_{k}_fraction"] for k in range(10)) == pytest.approx(1.0)
    assert result["psnr_paired"] == math.inf and result["ssim_paired"] == pytest.approx(1.0)
    assert set(result["pixel_range_checks"]) == {"images", "reference", "originals"}
    assert all(check["passed"] for check in result["pixel_range_checks"].values())
    if inception_unavailable_reason() is not None:  # no Inception weights in torch hub's cache here
        assert "fid" not in result
        assert any("--inception_weights" in note for note in result["notes"])


def test_rgb_images_get_pixel_metrics_and_skip_notes():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 32, 32), generator=generator, dtype=torch.uint8)
    reference = torch.randint(0, 256, (16, 3, 32, 32), generator=generator, dtype=torch.uint8)
    result = evaluate_images(images, reference, images_range="uint8", reference_range="uint8")
    assert "digit_fd" not in result and math.isfinite(result["psnr"]) and math.isfinite(result["ssim_real"])
    assert any("1x28x28" in note for note in result["notes"])


def test_evaluate_refuses_mismatched_shapes(mnist_test):
    with pytest.raises(ValueError, match="same channels and resolution"):
        evaluate_images(torch.rand(4, 3, 28, 28) * 2 - 1, mnist_test[0][:100], reference_range="uint8")


def test_cli_on_npz_writes_json(mnist_test, tmp_path, capsys):
    images = mnist_test[0][:32, 0].numpy()  # (N, H, W) uint8, as a sampler might save it
    np.savez(tmp_path / "samples.npz", images=images)
    output = tmp_path / "evaluation.json"
    main([str(tmp_path / "samples.npz"), "--output", str(output), "--batch_size", "32"])
    result = json.loads(output.read_text())
    assert result["num_samples"] == 32
    assert result["pixel_range_checks"]["images"]["declared"] == "uint8"
    assert {"digit_fd", "digit_fd_real", "digit_is", "psnr", "ssim_real"} <= result.keys()
    assert "N=32 | digit FD" in capsys.readouterr().out

    np.savez(tmp_path / "floats.npz", images=images.astype(np.float32) / 255)
    with pytest.raises(ValueError, match="declare their range with --pixel_range"):
        main([str(tmp_path / "floats.npz"), "--output", str(tmp_path / "floats.json")])


def test_cli_samples_a_saved_pipeline_reproducibly(tmp_path):
    unet = UNet2DModel(
        sample_size=28,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10)).save_pretrained(tmp_path / "ddpm")
    arguments = [str(tmp_path / "ddpm"), "--num_samples", "6", "--batch_size", "4", "--num_inference_steps", "2"]
    first = main([*arguments, "--scheduler", "ddim", "--output", str(tmp_path / "first.json")])
    second = main([*arguments, "--scheduler", "ddim", "--output", str(tmp_path / "second.json")])
    assert first["num_samples"] == second["num_samples"] == 6 and first["pixel_range_checks"]["images"]["declared"] == "uint8"
    assert (tmp_path / "first.json").read_text() == (tmp_path / "second.json").read_text()
    with pytest.raises(ValueError, match="cold-diffusion pipelines only"):
        main([*arguments, "--conditional"])


def test_cli_writes_its_json_beside_its_input_by_default(mnist_test, tmp_path, capsys):
    np.savez(tmp_path / "samples.npz", images=mnist_test[0][:8, 0].numpy())
    main([str(tmp_path / "samples.npz"), "--batch_size", "8"])
    beside = tmp_path / "samples-evaluation.json"
    assert json.loads(beside.read_text())["num_samples"] == 8
    assert f"wrote {beside}" in capsys.readouterr().out
    # The same input again: refused, the first result kept (the working folder stays empty: see conftest).
    first = beside.read_text()
    with pytest.raises(ValueError, match="samples-evaluation.json already exists: pass --overwrite"):
        main([str(tmp_path / "samples.npz")])
    assert beside.read_text() == first
    # A folder of PNGs: the JSON goes next to the folder, not into it.
    folder = tmp_path / "pngs"
    folder.mkdir()
    for index, image in enumerate(mnist_test[0][:4, 0].numpy()):
        Image.fromarray(image).save(folder / f"{index}.png")
    main([str(folder) + "/", "--batch_size", "4"])
    assert json.loads((tmp_path / "pngs-evaluation.json").read_text())["num_samples"] == 4
    assert sorted(path.name for path in folder.iterdir()) == ["0.png", "1.png", "2.png", "3.png"]


def test_cli_scores_conditional_cold_diffusion_against_each_original(mnist_test, tmp_path):
    degradation = RowColumnAveraging(group_size=4)
    torch.manual_seed(0)
    unet = CourseworkCNN(hidden_channels=(4, 4, 4, 4), time_mlp_width=8, num_train_timesteps=degradation.num_levels)
    save_pipeline(ColdDiffusionPipeline(unet=unet, degradation=degradation, start_distribution=None), tmp_path / "cold")
    result = main([
        str(tmp_path / "cold"), "--conditional", "--num_samples", "8", "--num_inference_steps", "2",
        "--output", str(tmp_path / "cold.json"),
    ])
    assert result["num_samples"] == 8 and result["pixel_range_checks"]["originals"]["declared"] == "uint8"
    # The originals are the first 8 test images, each scored against its own restoration.
    originals = mnist_test[0][:8]
    restored = restore(open_pipeline(str(tmp_path / "cold")), originals, 8, 0, num_inference_steps=2).images
    psnr, ssim = paired_psnr_ssim(to_model_range(restored), to_model_range(originals))
    assert result["psnr_paired"] == pytest.approx(psnr.mean().item(), rel=1e-5)
    assert result["ssim_paired"] == pytest.approx(ssim.mean().item(), rel=1e-5)


def test_training_logs_sample_metrics_and_plot_draws_the_run(tmp_path):
    """--eval_every_epochs logs eval/* to metrics.jsonl and TensorBoard; `plot` draws the run folder."""
    output_dir = tmp_path / "run"
    # In this process: a fresh interpreter would spend longer importing than training.
    train_ddpm.main([
        *TINY_RUN, "--logger", "tensorboard", "--num_epochs", "2", "--output_dir", str(output_dir),
        "--eval_every_epochs", "1", "--eval_num_samples", "8", "--num_inference_steps", "2",
    ])
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    evaluations = [record for record in records if "eval/digit_fd" in record]
    assert [record["epoch"] for record in evaluations] == [1, 2]
    assert {"eval/digit_fd_real", "eval/digit_is", "eval/psnr", "eval/ssim_real"} <= evaluations[0].keys()
    events = b"".join(path.read_bytes() for path in (output_dir / "logs").rglob("events.out.tfevents.*"))
    assert b"eval/digit_fd" in events
    # The sample grids go to TensorBoard too, one image per epoch, as written to samples/.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = EventAccumulator(str(next((output_dir / "logs").rglob("events.out.tfevents.*")).parent), size_guidance={"images": 0})
    log.Reload()
    grids = log.Images("samples")
    assert [image.step for image in grids] == [8, 16]  # 256 images, batch 32: 8 steps per epoch
    on_disk = Image.open(output_dir / "samples" / "epoch_0002.png")
    assert (grids[-1].width, grids[-1].height) == on_disk.size

    written = plot_run(output_dir)
    assert [path.name for path in written] == ["loss_curves.png", "metrics.png", "sample_grids.png"]
    for path in written:
        assert Image.open(path).size[0] > 300


def test_plot_reads_resumed_logs_and_refuses_a_missing_run(tmp_path):
    lines = [
        {"step": 1, "epoch": 1, "loss": 1.0},
        {"step": 2, "epoch": 1, "train_loss": 0.9, "val_loss": 1.1},
        {"step": 2, "epoch": 1, "train_loss": 0.8, "val_loss": 1.0},  # logged again after a resume
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    metrics = read_metrics(tmp_path)
    series, epoch_of_step = metrics.series, metrics.epoch_of_step
    assert series["train_loss"] == {2: 0.8} and series["loss"] == {1: 1.0} and epoch_of_step == {1: 1, 2: 1}
    assert [path.name for path in plot_run(tmp_path)] == ["loss_curves.png"]  # no metrics, no grids: not drawn

    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot_run(tmp_path / "missing")
