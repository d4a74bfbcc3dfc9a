"""Inception-v3 FID and IS offline: a randomly initialised network of the FID Inception-v3's architecture stands in for
the real weights, so the plumbing (evaluate CLI, in-training evaluation), the grayscale-to-RGB and pixel-range handling,
the resize and the 10 splits of IS are checked here against literal computations.

The network itself was checked once against torch-fidelity 0.4.0's FeatureExtractorInceptionV3 (same state-dict keys,
23,850,960 parameters, bit-identical pool features and logits on random weights, identical IS and FID functions); the
tests pin its architecture by those numbers.
"""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import diffusion_lab.evaluation.inception as inception
from diffusion_lab.commands.evaluate import main as evaluate
from diffusion_lab.evaluation import evaluate_images
from diffusion_lab.evaluation.image_sources import load_dataset_images
from diffusion_lab.evaluation.inception import (
    FIDInceptionV3,
    inception_score_splits,
    resize_like_tensorflow1x,
    to_uint8_rgb,
)

# 75 x 75 is the smallest input Inception-v3 takes; the real 299 x 299 costs 16x more on a CPU. Only the tests that
# run many images shrink it (the layers do not depend on it).
SMALL_INPUT = 75


def random_inception(seed: int = 0) -> FIDInceptionV3:
    """Random weights scaled so that activations neither vanish nor explode through the 94 convolutions."""
    generator = torch.Generator().manual_seed(seed)
    network = FIDInceptionV3()
    for module in network.modules():
        if isinstance(module, torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5)
        elif isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    network.fc.weight.copy_(torch.randn(network.fc.weight.shape, generator=generator) * 0.05)
    return network


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "random_inception.safetensors"
    save_file(random_inception().state_dict(), path)
    return path


def test_the_network_is_the_fid_inception_v3(tmp_path):
    network = FIDInceptionV3()
    state = network.state_dict()
    assert sum(p.numel() for p in network.parameters()) == 23_850_960  # torch-fidelity's FeatureExtractorInceptionV3
    assert len([key for key in state if key.endswith(".conv.weight")]) == 94
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3) and state["fc.weight"].shape == (1008, 2048)
    assert state["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert network.Mixed_7b.max_pool is False and network.Mixed_7c.max_pool is True  # TensorFlow's graph
    # torch-fidelity's file is a pickled state dict, read with weights_only=True (the other tests load a safetensors copy).
    source = random_inception(seed=1)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    loaded = FIDInceptionV3.from_file(tmp_path / "weights.pth").state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in source.state_dict().items())
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not FID Inception-v3 weights"):
        FIDInceptionV3.from_file(tmp_path / "other.pth")


def test_resize_is_tensorflow_1x_bilinear():
    images = torch.rand(2, 3, 5, 4) * 255
    size = 7
    expected = torch.empty(2, 3, size, size)
    for i in range(size):
        for j in range(size):
            y, x = i * 5 / size, j * 4 / size  # TF1: no half-pixel offset
            y0, x0 = int(y), int(x)
            y1, x1 = min(y0 + 1, 4), min(x0 + 1, 3)
            dy, dx = y - y0, x - x0
            top = images[:, :, y0, x0] * (1 - dx) + images[:, :, y0, x1] * dx
            bottom = images[:, :, y1, x0] * (1 - dx) + images[:, :, y1, x1] * dx
            expected[:, :, i, j] = top * (1 - dy) + bottom * dy
    torch.testing.assert_close(resize_like_tensorflow1x(images, size), expected, atol=1e-3, rtol=1e-5)
    half_pixel = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    assert (half_pixel - expected).abs().max() > 1  # PyTorch's default resize would give other features


def test_pixel_handling_grayscale_becomes_rgb_uint8_and_the_network_sees_x_minus_128_over_128():
    images = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0]).reshape(1, 1, 1, 5)
    rgb = to_uint8_rgb(images)
    assert rgb.dtype == torch.uint8 and rgb.shape == (1, 3, 1, 5)
    assert rgb[0, :, 0].tolist() == [[0, 64, 128, 255, 255]] * 3  # (x + 1) * 127.5 = 0, 63.75, 127.5, 254.9, 255, rounded
    with pytest.raises(ValueError, match="1- or 3-channel"):
        to_uint8_rgb(torch.zeros(1, 2, 4, 4))
    network = FIDInceptionV3()
    seen = []
    network.Conv2d_1a_3x3.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    network(torch.full((1, 3, 8, 8), 255, dtype=torch.uint8))
    assert seen[0].shape == (1, 3, 299, 299) and torch.all(seen[0] == 127 / 128)
    with pytest.raises(ValueError, match="uint8 RGB"):
        network(torch.zeros(1, 3, 8, 8))


def literal_inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS as Salimans et al. with torch-fidelity's split protocol, written out with numpy."""
    logits = logits[np.random.RandomState(2020).permutation(len(logits))]
    scores = []
    for index in range(splits):
        chunk = logits[index * len(logits) // splits : (index + 1) * len(logits) // splits]
        p = np.exp(chunk - chunk.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        marginal = p.mean(axis=0)
        scores.append(np.exp(np.mean([np.sum(row * (np.log(row) - np.log(marginal))) for row in p])))
    return float(np.mean(scores)), float(np.std(scores))


def test_inception_score_mean_and_std_over_10_splits():
    # Closed forms: one class everywhere gives 1; 20 images of 20 distinct confident classes give 2 in every split of 2.
    assert inception_score_splits(torch.zeros(30, 1008)) == pytest.approx((1.0, 0.0))
    distinct = torch.full((20, 1008), -50.0)
    distinct[torch.arange(20), torch.arange(20)] = 50.0
    assert inception_score_splits(distinct) == pytest.approx((2.0, 0.0))
    logits = torch.randn(53, 1008, generator=torch.Generator().manual_seed(0)) * 3  # splits of 5 and 6 images
    score, spread = inception_score_splits(logits)
    assert (score, spread) == pytest.approx(literal_inception_score(logits.numpy().astype(np.float64)), rel=1e-9)
    assert spread > 0
    with pytest.raises(ValueError, match="at least 10 images"):
        inception_score_splits(logits[:9])


def literal_fid(features: np.ndarray, reference: np.ndarray) -> float:
    """The Fréchet distance with full 2048 x 2048 covariances: Tr((S1 S2)^(1/2)) = Tr((R S1 R)^(1/2)), R = S2^(1/2),
    both square roots from symmetric eigendecompositions."""
    mu1, mu2 = features.mean(axis=0), reference.mean(axis=0)
    sigma1, sigma2 = np.cov(features, rowvar=False), np.cov(reference, rowvar=False)
    values, vectors = np.linalg.eigh(sigma2)
    root = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    trace_sqrt = np.sqrt(np.linalg.eigvalsh(root @ sigma1 @ root).clip(min=0)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def test_frechet_distance_low_rank_path_equals_the_full_covariance_formula():
    generator = torch.Generator().manual_seed(0)
    first, second = torch.randn(12, 64, generator=generator), torch.randn(9, 64, generator=generator) * 1.5 + 0.2
    assert inception.frechet_distance(first, second) == pytest.approx(literal_fid(first.double().numpy(), second.double().numpy()), rel=1e-6)
    many, other = torch.randn(80, 16, generator=generator), torch.randn(90, 16, generator=generator) + 0.5  # N > features
    expected = literal_fid(many.double().numpy(), other.double().numpy())
    assert inception.frechet_distance(many, other) == pytest.approx(expected, rel=1e-6) and expected > 0.5 * 16 * 0.25


def test_evaluate_cli_reports_fid_and_is_with_std_against_a_literal_computation(weights_file, tmp_path, monkeypatch):
    monkeypatch.setattr(inception, "INPUT_SIZE", SMALL_INPUT)
    test_images, _ = load_dataset_images(split="test")
    generated = test_images[-20:].clone()
    generated[:, :, :14] = 255 - generated[:, :, :14]  # not real digits: top halves inverted
    np.savez(tmp_path / "samples.npz", images=generated.permute(0, 2, 3, 1).numpy())
    result = evaluate([str(tmp_path / "samples.npz"), "--inception_weights", str(weights_file), "--output", str(tmp_path / "e.json")])
    assert not [note for note in result["notes"] if "FID" in note]
    written = json.loads((tmp_path / "e.json").read_text())
    for key in ("fid", "fid_real", "inception_score", "inception_score_std", "inception_score_real", "inception_score_std_real"):
        assert isinstance(written[key], float), key

    # The literal path: uint8 grayscale repeated to RGB, the network, the Fréchet distance, the 10 splits.
    order = torch.randperm(len(test_images), generator=torch.Generator().manual_seed(0))  # evaluate's real subsets
    compared, stand_in = test_images[order[:20]], test_images[order[20:40]]
    network = FIDInceptionV3.from_file(weights_file)
    with torch.no_grad():
        outputs = {name: network(images.repeat(1, 3, 1, 1)) for name, images in
                   (("generated", generated), ("real", stand_in), ("compared", compared))}
    pool = {name: value[0] for name, value in outputs.items()}
    # (frechet_distance itself is checked against the full-covariance formula above.)
    assert result["fid"] == pytest.approx(inception.frechet_distance(pool["generated"], pool["compared"]), rel=1e-4)
    assert result["fid_real"] == pytest.approx(inception.frechet_distance(pool["real"], pool["compared"]), rel=1e-4)
    assert result["fid"] > 1.5 * result["fid_real"]
    score, spread = literal_inception_score(outputs["generated"][1].double().numpy())
    assert (result["inception_score"], result["inception_score_std"]) == pytest.approx((score, spread), rel=1e-6)
    # The same images given as floats in [0, 1] score the same: the declared pixel range is converted, not guessed.
    floats = evaluate_images(generated.float() / 255, torch.cat([compared, stand_in]), images_range="[0,1]",
                             reference_range="uint8", inception_weights=weights_file, seed=0)
    assert floats["inception_score"] == pytest.approx(result["inception_score"], rel=1e-6)


def test_evaluate_refuses_a_missing_weights_file_and_notes_why_when_there_are_none(tmp_path, monkeypatch):
    images = np.random.default_rng(0).integers(0, 256, (12, 28, 28, 1), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", images=images)
    with pytest.raises(ValueError, match="--inception_weights .* is not a file"):
        evaluate([str(tmp_path / "s.npz"), "--inception_weights", str(tmp_path / "none.pth"), "--output", str(tmp_path / "x.json")])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    result = evaluate([str(tmp_path / "s.npz"), "--output", str(tmp_path / "y.json")])
    assert "fid" not in result and any("Inception" in note and "--inception_weights" in note for note in result["notes"])


def test_in_training_evaluation_logs_fid_and_is_with_inception_weights(weights_file, tmp_path, monkeypatch):
    from helpers import TINY_RUN

    from diffusion_lab.commands import train_ddpm

    monkeypatch.setattr(inception, "INPUT_SIZE", SMALL_INPUT)
    argv = ["--output_dir", str(tmp_path / "run"), *TINY_RUN, "--max_train_steps", "8", "--eval_every_epochs", "1",
            "--eval_num_samples", "10", "--num_inference_steps", "2", "--inception_weights", str(weights_file)]
    args = train_ddpm.parse_args(argv)
    train_ddpm.run_training(args, train_ddpm.DDPMObjective.from_args(args), argv=["train_ddpm.py"])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluation = next(record for record in records if "eval/fid" in record)
    for key in ("eval/fid", "eval/fid_real", "eval/inception_score", "eval/inception_score_std", "eval/digit_fd"):
        assert np.isfinite(evaluation[key]), key
    assert evaluation["eval/inception_score"] >= 1.0 - 1e-9  # exp of a mean KL divergence, up to float rounding
