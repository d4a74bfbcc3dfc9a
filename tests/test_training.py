import json

import numpy as np
import pytest
import torch
from helpers import TINY_RUN, run_script
from safetensors.torch import load_file

from diffusion_lab.commands import train_ddpm
from diffusion_lab.hub import prepare_upload
from diffusion_lab.pipelines.export import load_pipeline


def train(output_dir, *extra):
    args = train_ddpm.parse_args(["--output_dir", str(output_dir), *TINY_RUN, *map(str, extra)])
    return train_ddpm.run_training(args, train_ddpm.DDPMObjective.from_args(args), argv=["train_ddpm.py"])


def weights(folder):
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


def records(folder, key):
    return [r[key] for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if key in r]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short real run on 256 MNIST digits: 40 steps of batch 32 with a high learning rate."""
    folder = tmp_path_factory.mktemp("run") / "ddpm"
    train(folder, "--max_train_steps", "40", "--learning_rate", "2e-3", "--use_ema", "--checkpointing_steps", "20")
    return folder


def test_short_training_lowers_the_loss(trained):
    losses = records(trained, "loss")
    assert len(losses) == 20 and losses[-1] < 0.5 * losses[0]
    assert len(records(trained, "val_loss")) == 5  # 8 steps per epoch -> 5 epochs, one validation loss each
    assert len(records(trained, "ema_decay")) == 20
    assert sorted(p.name for p in (trained / "samples").glob("*.png")) == [f"epoch_{e:04d}.png" for e in range(1, 6)]


def test_saved_pipeline_round_trips_exactly_and_loads_without_remote_code(trained):
    pipeline = load_pipeline(str(trained))
    saved = weights(trained)
    for name, tensor in pipeline.unet.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert type(pipeline.unet).__module__ == "diffusion_lab.models.coursework_cnn"


def test_diffusers_alone_loads_the_cnn_pipeline_with_remote_code(trained):
    reference = load_pipeline(str(trained))(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(3), output_type="np").images
    np.save(trained.parent / "reference.npy", reference)
    code = (
        "import sys, numpy as np, torch\n"
        "from diffusers import DiffusionPipeline\n"
        f"p = DiffusionPipeline.from_pretrained({str(trained)!r}, trust_remote_code=True)\n"
        "assert 'diffusion_lab' not in sys.modules, 'diffusion_lab was imported'\n"
        "x = p(batch_size=2, num_inference_steps=5, generator=torch.Generator().manual_seed(3), output_type='np').images\n"
        f"assert np.array_equal(x, np.load({str(trained.parent / 'reference.npy')!r})), 'samples differ'\n"
    )
    result = run_script("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]


def test_resume_continues_to_the_same_weights_as_an_uninterrupted_run(trained, tmp_path):
    # Stop at the checkpoint of step 20, resume, finish at 40 -- the same as `trained`.
    folder = tmp_path / "resumed"
    common = ["--learning_rate", "2e-3", "--use_ema", "--checkpointing_steps", "20"]
    train(folder, "--max_train_steps", "20", *common)
    train(folder, "--max_train_steps", "40", *common, "--resume_from_checkpoint", "latest")
    reference, resumed = weights(trained), weights(folder)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-40"]


def test_seeded_sampling_reproduces_itself(trained, tmp_path):
    outputs = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        result = run_script("-m", "diffusion_lab", "sample", trained, "--num_images", "3", "--batch_size", "2",
                            "--scheduler", "ddim", "--num_inference_steps", "5", "--seed", seed, "--output_dir", tmp_path / name)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs.append(np.load(tmp_path / name / "samples.npz")["images"])
    assert outputs[0].shape == (3, 28, 28, 1) and outputs[0].dtype == np.uint8
    assert np.array_equal(outputs[0], outputs[1]) and not np.array_equal(outputs[0], outputs[2])
    assert len(list((tmp_path / "a" / "images").glob("*.png"))) == 3 and (tmp_path / "a" / "grid.png").exists()


def test_model_card_and_upload_hold_no_token_or_local_path(trained):
    upload = prepare_upload(trained, "someone/ddpm-test")
    card = (trained / "README.md").read_text()
    assert "library_name: diffusers" in card and "trust_remote_code=True" in card and "![samples](sample_grid.png)" in card
    assert str(trained.parent) not in card and "train_ddpm.py" in card
    assert "checkpoint-*" in upload.ignore_patterns and "logs/**" in upload.ignore_patterns
    assert (trained / "sample_grid.png").exists()


def test_hub_token_and_local_paths_are_never_written(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_ENVSECRET456")
    folder = tmp_path / "run"
    argv = ["--output_dir", str(folder), *TINY_RUN, "--max_train_steps", "2", "--checkpointing_steps", "2", "--use_ema",
            "--logger", "tensorboard", "--hub_token", "hf_SECRET123"]
    args = train_ddpm.parse_args(argv)
    train_ddpm.run_training(args, train_ddpm.DDPMObjective.from_args(args), argv=["train_ddpm.py", *argv])
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert any(path.name.startswith("events.out.tfevents") for path in files) and (folder / "README.md") in files
    for path in files:  # weights, configs, model card, metrics, TensorBoard events and hparams
        data = path.read_bytes()
        assert b"hf_SECRET123" not in data and b"hf_ENVSECRET456" not in data, path
        assert str(tmp_path).encode() not in data, path  # no absolute local path either


def test_rgb_image_folder_at_32px_with_the_cifar10_unet_preset(tmp_path):
    from helpers import make_folder

    images = make_folder(tmp_path / "images", count=10, size=(36, 32))
    folder = tmp_path / "rgb"
    train(folder, "--train_data_dir", images, "--resolution", "32", "--center_crop", "--random_flip", "--model", "unet_cifar10",
          "--train_batch_size", "4", "--eval_batch_size", "2", "--max_train_steps", "2", "--num_inference_steps", "2")
    pipeline = load_pipeline(str(folder))
    assert pipeline.unet.config.in_channels == 3 and pipeline.unet.config.block_out_channels == [128, 256, 256, 256]
    assert json.loads((folder / "model_index.json").read_text())["unet"] == ["diffusers", "UNet2DModel"]


def test_cli_exit_status_and_single_line_in_a_real_process(tmp_path):
    result = run_script("train_ddpm.py", "--output_dir", tmp_path / "o", "--train_batch_size", "-1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --train_batch_size -1 must be a positive integer."]


def test_train_ddpm_defaults_to_the_time_to_quality_recipe(monkeypatch):
    # The README's "Time to quality" curve is the evidence; the seeds' recipe stays one set of flags away.
    monkeypatch.setattr("diffusion_lab.commands.train_ddpm.training_device_is_cuda", lambda: False)
    defaults = train_ddpm.parse_args([])
    assert (defaults.model, defaults.train_batch_size, defaults.snr_gamma, defaults.optimizer, defaults.learning_rate, defaults.lr_scheduler,
            defaults.lr_warmup_steps, defaults.use_ema, defaults.num_epochs, defaults.sampler) == (
        "unet_small", 32, 5, "adamw", 2e-3, "cosine", 250, True, 8, "dpmsolver-sde")
    seeds = train_ddpm.parse_args(["--model", "cnn", "--optimizer", "adam", "--learning_rate", "2e-4", "--lr_scheduler", "constant",
                                   "--lr_warmup_steps", "0", "--no-use_ema", "--snr_gamma", "0"])
    assert (seeds.model, seeds.optimizer, seeds.learning_rate, seeds.lr_scheduler, seeds.use_ema, seeds.snr_gamma) == ("cnn", "adam", 2e-4, "constant", False, 0)
