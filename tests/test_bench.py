"""The benchmarks' reference data path, the speed flags of the trainer, and smoke runs of the benchmark scripts."""

import json
import sys

import numpy as np
import pytest
import torch
from helpers import ROOT, record_host_reads, run_script
from PIL import Image

sys.path.insert(0, str(ROOT / "benchmarks"))
from diffusers_example_data import (  # noqa: E402
    CenterCrop,
    ExampleAugmentations,
    RandomHorizontalFlip,
    Resize,
)


def test_resize_keeps_aspect_and_skips_images_already_at_size():
    image = Image.new("L", (40, 20))
    assert Resize(10)(image).size == (20, 10)  # shorter side (height) to 10
    same = Image.new("L", (28, 28))
    assert Resize(28)(same) is same  # torchvision returns the input untouched


def test_center_crop_takes_the_middle():
    array = np.arange(36, dtype=np.uint8).reshape(6, 6)
    cropped = np.asarray(CenterCrop(2)(Image.fromarray(array)))
    np.testing.assert_array_equal(cropped, array[2:4, 2:4])


def test_augmentations_give_rgb_tensor_in_minus_one_one():
    image = Image.fromarray(np.array([[0, 255], [51, 102]], dtype=np.uint8)).convert("RGB")
    tensor = ExampleAugmentations(resolution=2, center_crop=True, random_flip=False)(image)
    expected = torch.tensor([[0, 255], [51, 102]], dtype=torch.float32) / 127.5 - 1
    assert tensor.shape == (3, 2, 2)
    torch.testing.assert_close(tensor, expected.expand(3, 2, 2))


def test_random_flip_flips_about_half():
    image = Image.fromarray(np.array([[0, 255]], dtype=np.uint8))
    torch.manual_seed(0)
    flipped = sum(np.asarray(RandomHorizontalFlip()(image))[0, 0] == 255 for _ in range(400))
    assert 150 < flipped < 250


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """40 tiny grayscale 'digits' in an image folder (the trainer holds out 5% for validation)."""
    folder = tmp_path_factory.mktemp("digits")
    rng = np.random.default_rng(0)
    for index in range(40):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{index:03d}.png")
    return folder


@pytest.fixture
def reset_accelerate_state():
    """Accelerate keeps one state per process: later in-process runs would otherwise inherit torch.compile."""
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state()


def test_trainer_with_torch_compile_saves_and_resumes_uncompiled(tmp_path, digit_folder, reset_accelerate_state):
    """The compiled wrapper must not leak into checkpoints or the exported pipeline (remote code, from_pretrained)."""
    from diffusion_lab.commands.train_ddpm import parse_args
    from diffusion_lab.training.checkpoints import save_checkpoint
    from diffusion_lab.training.ddpm_objective import DDPMObjective
    from diffusion_lab.training.loop import Trainer

    args = parse_args(["--model", "cnn", "--dataset_name", str(digit_folder), "--output_dir", str(tmp_path / "run"), "--train_batch_size", "8",
                       "--logger", "none", "--torch_compile", "--use_ema"])
    trainer = Trainer(args, DDPMObjective.from_args(args), ["train_ddpm.py"])
    assert isinstance(trainer.model, torch._dynamo.eval_frame.OptimizedModule)
    assert not isinstance(trainer.eager_model, torch._dynamo.eval_frame.OptimizedModule)
    trainer.save_pipeline()
    index = json.loads((tmp_path / "run" / "model_index.json").read_text())
    assert index["unet"] == ["coursework_cnn", "CourseworkCNN"]
    assert (tmp_path / "run" / "unet" / "coursework_cnn.py").exists()
    save_checkpoint(trainer.accelerator, trainer.output_dir, 1, None)
    with torch.no_grad():
        for parameter in trainer.eager_model.parameters():
            parameter.add_(1.0)
    trainer.accelerator.load_state(str(tmp_path / "run" / "checkpoint-1"))
    saved = type(trainer.eager_model).from_pretrained(tmp_path / "run" / "checkpoint-1", subfolder="model")
    for loaded, reference in zip(trainer.eager_model.parameters(), saved.parameters()):
        torch.testing.assert_close(loaded, reference, rtol=0, atol=0)


def test_train_step_never_waits_for_the_device(tmp_path, digit_folder, monkeypatch):
    """Our step code reads no tensor value on the host (.item(), bool(), float(), ...): no host-device sync per step.

    Only calls made from diffusion_lab's own files count: torch's Adam reads its CPU step counters by design.
    """
    from diffusion_lab.commands.train_ddpm import parse_args
    from diffusion_lab.training.ddpm_objective import DDPMObjective
    from diffusion_lab.training.loop import Trainer

    args = parse_args(["--model", "cnn", "--dataset_name", str(digit_folder), "--output_dir", str(tmp_path / "run"), "--train_batch_size", "8",
                       "--logger", "none", "--use_ema", "--random_flip", "--gradient_accumulation_steps", "2"])
    trainer = Trainer(args, DDPMObjective.from_args(args), ["train_ddpm.py"])
    reads = record_host_reads(monkeypatch)
    for step in range(2):
        trainer.step(step)
    assert reads == []
    assert not isinstance(trainer.model, torch._dynamo.eval_frame.OptimizedModule)  # no compile left over


def test_the_real_data_reference_stratifies_by_largest_remainders_and_draws_each_kind():
    from real_data_fd import draw_indices, stratified_counts

    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)  # shares 0.5, 0.3, 0.2
    assert stratified_counts(labels, 10).tolist() == [5, 3, 2]
    assert stratified_counts(labels, 4).tolist() == [2, 1, 1]  # 2.0, 1.2, 0.8: the largest remainder (0.8) gets the 4th
    picks = draw_indices(labels, 4, True, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[picks], minlength=3).tolist() == [2, 1, 1] and len(set(picks.tolist())) == 4
    assert len(set(draw_indices(labels, 7, False, torch.Generator().manual_seed(0)).tolist())) == 7  # without replacement


def test_the_real_data_reference_prints_each_kind_against_the_floor():
    result = run_script("benchmarks/real_data_fd.py", "--num_samples", "20", "--draws", "2", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["kinds"]) == {"iid", "stratified_by_label", "test_iid"} and report["floor"] > 0
    for row in report["kinds"].values():
        assert len(row["draws"]) == 2 and row["min"] <= row["mean"] <= row["max"]
        assert row["ratio"] == pytest.approx(row["mean"] / report["floor"])
    refused = run_script("benchmarks/real_data_fd.py", "--draws", "1")
    assert refused.returncode == 2 and "at least 2 draws" in refused.stderr
