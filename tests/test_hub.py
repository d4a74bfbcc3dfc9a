"""Sharing that works the first time: --push_to_hub checked before training, a failed upload said in one line with
the command that uploads later, and a model card that describes the run as it was (issue 17, section 7)."""

import json

import huggingface_hub
import pytest
from helpers import TINY_RUN
from huggingface_hub import constants

from diffusion_lab import hub
from diffusion_lab.commands import run_command, train_ddpm
from diffusion_lab.hub import HubError, check_hub_access
from diffusion_lab.pipelines.export import load_pipeline

SHORT = [*TINY_RUN, "--max_train_samples", "32", "--train_batch_size", "8", "--eval_batch_size", "2", "--num_inference_steps", "2"]


def run(capsys, *argv):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_command(train_ddpm.main, list(map(str, argv)))
    return exit_info.value.code, [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error", "stopped"))]


def test_push_to_hub_offline_is_refused_before_training(tmp_path, capsys):
    assert constants.HF_HUB_OFFLINE  # the suite runs offline (conftest)
    status, lines = run(capsys, "--output_dir", tmp_path / "run", *SHORT, "--max_train_steps", 1, "--push_to_hub", "--hub_model_id", "someone/x")
    assert status == 2 and lines == [
        "error: --push_to_hub cannot upload with HF_HUB_OFFLINE=1 set: unset it, or drop --push_to_hub and upload the pipeline later."]
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_no_token_and_an_unreachable_hub_are_one_line_each(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(HubError, match=r"^--push_to_hub needs a Hugging Face token: run `hf auth login` \(or set HF_TOKEN\) and rerun.$"):
        check_hub_access("someone/x")

    def unreachable(*args, **kwargs):
        raise ConnectionError("HTTPSConnectionPool(host='huggingface.co', port=443): Max retries exceeded\nmore lines")

    monkeypatch.setattr(huggingface_hub, "create_repo", unreachable)
    with pytest.raises(HubError) as error:
        check_hub_access("someone/x", token="hf_SECRET123")
    assert str(error.value).startswith("cannot create or reach the Hub repository someone/x (ConnectionError: HTTPSConnectionPool(")
    assert "\n" not in str(error.value) and "hf_SECRET123" not in str(error.value)


def test_a_failed_upload_keeps_the_pipeline_and_gives_the_command_and_the_card_tells_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("diffusion_lab.training.loop.check_hub_access", lambda repo_id, *args: repo_id)

    def network_down(*args, **kwargs):
        raise ConnectionError("Max retries exceeded with url: /api/repos/create")

    monkeypatch.setattr(huggingface_hub, "create_repo", network_down)
    folder = tmp_path / "run"
    status, lines = run(capsys, "--output_dir", folder, *SHORT, "--max_train_steps", 2, "--push_to_hub", "--hub_model_id", "someone/x")
    assert status == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: the upload to someone/x failed (ConnectionError: Max retries exceeded with url: /api/repos/create); "
                               f"the pipeline in {folder} is complete. Upload it later with: hf upload someone/x {folder} . --exclude 'checkpoint-*'")
    load_pipeline(str(folder))

    card = (folder / "README.md").read_text()
    assert "pipeline_tag: unconditional-image-generation" in card
    assert "model-index:" in card and "type: val_loss" in card  # the metrics, in the card's metadata
    assert 'from_pretrained("someone/x"' in card  # the repo id with its namespace
    assert "pip install diffusion-lab" not in card and "pypi.org" not in card  # not a published package
    command = json.loads((folder / "training_args.json").read_text())["command"]
    # The launcher settings actually used (one process, the precision "auto" resolved to) and the whole command.
    assert command.startswith("accelerate launch --num_processes 1 --mixed_precision ") and "auto" not in command.split()[5]
    assert command in card
    # The data and steps actually used: 32 images, 4 steps per epoch, 2 steps = 1 epoch (not --num_epochs' default 10).
    for row in ("| max_train_samples | 32 |", "| train_images | 32 |", "| max_train_steps | 2 |", "| num_epochs | 1 |", "| steps_per_epoch | 4 |"):
        assert row in card, row


def test_the_card_of_a_class_conditional_pipeline_shows_labels_and_guidance(tmp_path):
    folder = tmp_path / "cond"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": ["pipeline_class_conditional", "ClassConditionalDDPMPipeline"], "class_names": [str(k) for k in range(10)]}))
    card = hub.model_card(folder, "me/cond")
    assert "A class-conditional image diffusion pipeline (classes 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in card
    assert "pipeline(class_labels=9, batch_size=16, guidance_scale=3)" in card and "class-conditional" in card.split("---")[1]
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    card = hub.model_card(folder, "me/plain")
    assert "An unconditional image diffusion pipeline" in card and "pipeline(batch_size=16)" in card
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": ["pipeline_autoguided", "AutoguidedDDPMPipeline"], "guidance_scale": 2.0, "guide_unet": ["diffusers", "UNet2DModel"]}))
    card = hub.model_card(folder, "me/guided")
    assert "autoguided (Karras et al. 2024): `guide_unet`, the same run's EMA weights from earlier in training, guides `unet` at w = 2" in card
    assert "autoguidance" in card.split("---")[1] and "trust_remote_code=True" in card
