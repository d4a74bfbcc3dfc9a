"""Autoguidance: an unconditional DDPM pipeline guided by a weaker model of the same data (issue 24)."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from diffusion_lab.commands import autoguide, evaluate, run_command, sample
from diffusion_lab.pipelines import AutoguidedDDPMPipeline, ClassConditionalDDPMPipeline
from diffusion_lab.pipelines.export import load_pipeline, save_pipeline
from diffusion_lab.pipelines.pipeline_autoguided import autoguided_prediction


def tiny_unet(seed=0, sample_size=8, num_class_embeds=None):
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=sample_size, in_channels=1, out_channels=1, block_out_channels=(8, 8), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                       num_class_embeds=num_class_embeds)


def scheduler(beta_end=0.02):
    return DDPMScheduler(num_train_timesteps=20, beta_end=beta_end)


def draw(pipeline, seed=3, **kwargs):
    pipeline.set_progress_bar_config(disable=True)
    return pipeline(batch_size=2, generator=torch.Generator().manual_seed(seed), num_inference_steps=5, output_type="pt", **kwargs).images


def test_prediction_is_guide_plus_w_times_the_difference():
    main, guide = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([0.5, 3.0, -1.0])
    # 0.5 + 2 (1 - 0.5) = 1.5; 3 + 2 (2 - 3) = 1; equal predictions stay as they are
    assert torch.equal(autoguided_prediction(main, guide, 2.0), torch.tensor([1.5, 1.0, -1.0]))
    assert torch.equal(autoguided_prediction(main, guide, 1.0), main)
    assert torch.equal(autoguided_prediction(main, guide, 0.0), guide)
    assert autoguided_prediction(main, guide.bfloat16(), 2.0).dtype == torch.float32


def test_guidance_scale_one_is_the_main_model_and_other_scales_follow_the_formula():
    main, guide = tiny_unet(0), tiny_unet(1)
    pipeline = AutoguidedDDPMPipeline(main, guide, scheduler(), guidance_scale=3.0)
    alone = DDPMPipeline(unet=main, scheduler=scheduler())
    assert torch.allclose(draw(pipeline, guidance_scale=1.0), draw(alone), atol=1e-6)
    guided = draw(pipeline)  # the config's w = 3
    assert not torch.allclose(guided, draw(alone), atol=1e-3)
    assert torch.equal(guided, draw(pipeline, guidance_scale=3.0))
    # The loop written out: the scheduler steps on guide + 3 (main - guide).
    sched = scheduler()
    sched.set_timesteps(5)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn((2, 1, 8, 8), generator=generator)
    with torch.no_grad():
        for t in sched.timesteps:
            weak, strong = guide(x, t).sample, main(x, t).sample
            x = sched.step(weak + 3 * (strong - weak), t, x, generator=generator).prev_sample
    assert torch.allclose(guided, (x / 2 + 0.5).clamp(0, 1), atol=1e-5)


def test_a_guide_with_the_main_weights_changes_nothing():
    pipeline = AutoguidedDDPMPipeline(tiny_unet(0), tiny_unet(0), scheduler(), guidance_scale=4.0)
    assert torch.allclose(draw(pipeline), draw(pipeline, guidance_scale=1.0), atol=1e-6)


def test_save_and_load_keep_both_models_the_scale_and_the_samples(tmp_path):
    pipeline = AutoguidedDDPMPipeline(tiny_unet(0), tiny_unet(1), scheduler(), guidance_scale=2.5)
    save_pipeline(pipeline, tmp_path / "guided")
    assert not list((tmp_path / "guided").rglob("*.bin"))  # safetensors only
    loaded = load_pipeline(tmp_path / "guided")
    assert type(loaded) is AutoguidedDDPMPipeline and loaded.config.guidance_scale == 2.5
    for name in ("unet", "guide_unet"):
        saved, restored = getattr(pipeline, name).state_dict(), getattr(loaded, name).state_dict()
        assert saved.keys() == restored.keys() and all(torch.equal(saved[key], restored[key]) for key in saved)
    assert torch.equal(draw(loaded), draw(pipeline))


def save_ddpm(folder, unet, noise_schedule=None):
    DDPMPipeline(unet=unet, scheduler=noise_schedule or scheduler()).save_pretrained(folder, safe_serialization=True)
    return folder


def run_autoguide(argv, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_command(autoguide.main, [str(arg) for arg in argv])
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def test_the_command_writes_a_pipeline_of_the_two_models(tmp_path, capsys):
    main, guide = save_ddpm(tmp_path / "main", tiny_unet(0)), save_ddpm(tmp_path / "guide", tiny_unet(1))
    run_command(autoguide.main, [str(main), str(guide), "--output_dir", str(tmp_path / "out"), "--guidance_scale", "1.5"])
    assert "diffusion-lab sample" in capsys.readouterr().out
    loaded = load_pipeline(tmp_path / "out")
    assert type(loaded) is AutoguidedDDPMPipeline and loaded.config.guidance_scale == 1.5
    assert torch.equal(loaded.guide_unet.conv_in.weight, tiny_unet(1).conv_in.weight)
    assert torch.equal(loaded.unet.conv_in.weight, tiny_unet(0).conv_in.weight)
    # An autoguided MAIN (the CPU default run's pipeline) stands for its main model: re-paired, not guided twice.
    run_command(autoguide.main, [str(tmp_path / "out"), str(save_ddpm(tmp_path / "guide2", tiny_unet(2))), "--output_dir", str(tmp_path / "re")])
    repaired = load_pipeline(tmp_path / "re")
    assert type(repaired.unet) is UNet2DModel and torch.equal(repaired.unet.conv_in.weight, tiny_unet(0).conv_in.weight)
    assert torch.equal(repaired.guide_unet.conv_in.weight, tiny_unet(2).conv_in.weight) and repaired.config.guidance_scale == 2


@pytest.mark.parametrize("case", ["not empty", "same folder", "class-conditional", "other size", "other betas"])
def test_the_command_refuses_bad_input_in_one_line_and_writes_nothing(case, tmp_path, capsys):
    main = save_ddpm(tmp_path / "main", tiny_unet(0))
    guide = {
        "not empty": lambda: save_ddpm(tmp_path / "guide", tiny_unet(1)),
        "same folder": lambda: main,
        "class-conditional": lambda: ClassConditionalDDPMPipeline(tiny_unet(1, num_class_embeds=3), scheduler()).save_pretrained(
            tmp_path / "guide", safe_serialization=True) or tmp_path / "guide",
        "other size": lambda: save_ddpm(tmp_path / "guide", tiny_unet(1, sample_size=16)),
        "other betas": lambda: save_ddpm(tmp_path / "guide", tiny_unet(1), scheduler(beta_end=0.2)),
    }[case]()
    output_dir = tmp_path / "out"
    if case == "not empty":
        output_dir.mkdir()
        (output_dir / "notes.txt").write_text("keep me")
    status, lines = run_autoguide([main, guide, "--output_dir", output_dir], capsys)
    expected = {"not empty": "is not empty", "same folder": "are the same folder", "class-conditional": "is a ClassConditionalDDPMPipeline",
                "other size": "has sample_size 16 against 8", "other betas": "another noise schedule"}[case]
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    if case == "not empty":
        assert [path.name for path in output_dir.iterdir()] == ["notes.txt"] and (output_dir / "notes.txt").read_text() == "keep me"
    else:
        assert not output_dir.exists()
    assert json.loads((main / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"


def test_sample_and_evaluate_take_another_w_for_an_autoguided_pipeline(tmp_path):
    main, guide = tiny_unet(0, sample_size=28), tiny_unet(1, sample_size=28)
    save_pipeline(AutoguidedDDPMPipeline(main, guide, scheduler()), tmp_path / "guided")
    save_pipeline(DDPMPipeline(unet=main, scheduler=scheduler()), tmp_path / "alone")

    def samples(name, *flags):
        out = tmp_path / f"{name}-samples-{'-'.join(flags)}"
        run_command(sample.main, [str(tmp_path / name), "--num_images", "4", "--num_inference_steps", "3", "--output_dir", str(out), *flags])
        return np.load(out / "samples.npz")["images"]

    # w = 1 is the main model alone, the pipeline's own w (2) is what it draws by default, and 3 differs from both.
    alone, guided = samples("alone"), samples("guided")
    assert np.array_equal(samples("guided", "--guidance_scale", "1"), alone)
    assert not np.array_equal(guided, alone)
    assert not np.array_equal(samples("guided", "--guidance_scale", "3"), guided)
    output = tmp_path / "sweep.json"
    result = evaluate.main([str(tmp_path / "guided"), "--num_samples", "8", "--num_inference_steps", "3", "--guidance_scale",
                            "1", "2", "--dinov2_model", "none", "--output", str(output)])
    assert [row["guidance_scale"] for row in result["guidance_sweep"]] == [1, 2]
    # Without --guidance_scale the result records the w the pipeline was saved with.
    single = evaluate.main([str(tmp_path / "guided"), "--num_samples", "8", "--num_inference_steps", "3", "--dinov2_model", "none",
                            "--output", str(tmp_path / "own.json")])
    assert single["guidance_scale"] == 2.0 and json.loads((tmp_path / "own.json").read_text())["guidance_scale"] == 2.0
    table = output.with_suffix(".md").read_text()
    assert table.startswith("| w | digit FD | digit IS |\n") and "class accuracy" not in table and output.with_suffix(".png").is_file()
