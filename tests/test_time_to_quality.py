"""Time to quality: the benchmark's curve, the fast sampler of grids, and the automatic precision."""

import json

import pytest
import torch
from helpers import ROOT, TINY_RUN, run_script
from safetensors.torch import load_file

from diffusion_lab.commands import train_ddpm
from diffusion_lab.models import CourseworkCNN
from diffusion_lab.sampling import draw
from diffusion_lab.training.precision import auto_mixed_precision, cpu_has_native_bf16


def test_the_benchmark_prints_a_complete_curve_with_two_points(tmp_path):
    output = tmp_path / "run"
    result = run_script(ROOT / "benchmarks" / "time_to_quality.py", "--marks", "0.02", "0.04", "--num_samples", "16", "--json",
                        "--output_dir", output, "--", *TINY_RUN, "--max_train_samples", "128", "--lr_scheduler", "constant_with_warmup")
    assert result.returncode == 0, result.stderr[-3000:]
    curve = json.loads(result.stdout.strip().splitlines()[-1])
    assert curve["num_samples"] == 16 and curve["mixed_precision"] in ("bf16", "no")
    points = curve["points"]
    assert [point["mark_minutes"] for point in points] == [0.02, 0.04]
    assert 0.02 <= points[0]["minutes"] < points[1]["minutes"] and 0 < points[0]["steps"] < points[1]["steps"]
    for point in points:
        assert point["floor"] > 0 and point["ratio"] == pytest.approx(point["digit_fd"] / point["floor"])
        assert sum(point["class_fractions"]) == pytest.approx(1, abs=1e-3)
        assert point["images_seen"] == point["steps"] * 32
        assert point["digit_fd_draws"] == [point["digit_fd"]] and point["digit_fd_sd"] is None  # one draw by default
    folder = output / "time_to_quality"
    assert json.loads((folder / "curve.json").read_text())["points"] == points
    for name in ("curve.png", "mark_0.02.png", "mark_0.04.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The last mark ends the run, and the pipeline holds the weights it ended with: those of the last mark's snapshot.
    assert (output / "model_index.json").exists()
    final = load_file(output / "unet" / "diffusion_pytorch_model.safetensors")
    snapshots = [load_file(folder / f"mark_{mark}" / "unet" / "diffusion_pytorch_model.safetensors") for mark in ("0.02", "0.04")]
    assert final.keys() == snapshots[1].keys() and all(torch.equal(final[name], snapshots[1][name]) for name in final)
    assert any(not torch.equal(final[name], snapshots[0][name]) for name in final)
    assert "[time to quality]" in result.stdout

    # Two curves in one plot; curves scored at different N are refused.
    result = run_script(ROOT / "benchmarks" / "compare_curves.py", f"first={folder / 'curve.json'}", folder / "curve.json",
                        "--output", tmp_path / "both.png")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "both.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**curve, "points": [{**point, "num_samples": 32} for point in points]}))
    result = run_script(ROOT / "benchmarks" / "compare_curves.py", folder / "curve.json", other, "--output", tmp_path / "mixed.png")
    assert result.returncode == 2 and "scored at different N ([16, 32])" in result.stderr
    assert not (tmp_path / "mixed.png").exists()

    # The sampler comparison on the pipeline the run left: the last sampler is the reference.
    # Two seeds: two draws from different noise per sampler, the FD their mean.
    result = run_script(ROOT / "benchmarks" / "sampler_quality.py", output, "--num_samples", "8", "--batch_size", "4",
                        "--samplers", "dpmsolver-sde:2", "ddpm:3", "--seed", "0", "1000", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    rows = report["rows"]
    assert report["seeds"] == [0, 1000]
    assert [(row["sampler"], row["steps"]) for row in rows] == [("dpmsolver-sde", 2), ("ddpm", 3)]
    assert rows[1]["fd_vs_reference"] == 1 and rows[0]["fd_vs_reference"] == pytest.approx(rows[0]["digit_fd"] / rows[1]["digit_fd"])
    for row in rows:
        first, second = row["digit_fd_draws"]
        assert first != second and row["digit_fd"] == pytest.approx((first + second) / 2)
        assert row["digit_fd_sd"] == pytest.approx(abs(first - second) / 2 ** 0.5)


def model_calls_of_one_sample(*flags) -> int:
    """How many times the grids' sampler calls the model for one image."""
    args = train_ddpm.parse_args(["--model", "cnn", *flags])
    objective = train_ddpm.DDPMObjective.from_args(args)
    torch.manual_seed(0)
    model = CourseworkCNN(hidden_channels=(2, 2, 2, 2), num_train_timesteps=args.ddpm_num_steps)
    objective.loss(model, torch.rand(4, 1, 28, 28) * 2 - 1)  # DES measures its noise scale in training
    calls = []
    model.register_forward_pre_hook(lambda module, inputs: calls.append(1))
    images = draw(objective.pipeline(model), 1, torch.Generator().manual_seed(0), args.num_inference_steps, **objective.sampling_options())
    assert images.shape == (1, 1, 28, 28) and images.min() >= -1 and images.max() <= 1
    return len(calls)


@pytest.mark.parametrize("flags, calls", [
    ((), 20),                                                       # SDE-DPM-Solver++, 20 steps, by default
    (("--sampler", "dpmsolver"), 20),
    (("--num_inference_steps", "7"), 7),                            # the flag still overrides
    (("--sampler", "ddim"), 50),
    (("--sampler", "ddpm", "--ddpm_num_steps", "60"), 60),          # every training step, ancestral
    (("--noise_schedule", "entropy_scaled"), 100),                  # DES keeps its own sampler, strided
])
def test_sample_grids_use_a_fast_sampler_by_default(flags, calls):
    assert model_calls_of_one_sample(*flags) == calls


def test_the_default_grid_sampler_keeps_the_trained_betas():
    args = train_ddpm.parse_args(["--noise_schedule", "geometric"])
    objective = train_ddpm.DDPMObjective.from_args(args)
    pipeline = objective.pipeline(CourseworkCNN(hidden_channels=(2, 2, 2, 2)))
    from diffusion_lab.sampling import use_sampler

    assert use_sampler(pipeline, args.sampler) == 20
    assert type(pipeline.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert pipeline.scheduler.config.algorithm_type == "sde-dpmsolver++"
    torch.testing.assert_close(pipeline.scheduler.alphas_cumprod, objective.scheduler.alphas_cumprod)


def test_the_sde_sampler_draws_fresh_noise_from_the_seed():
    """Same seed, same images; another seed, other images, even from the same start: SDE steps add noise."""
    from diffusion_lab.sampling import use_sampler

    args = train_ddpm.parse_args([])
    torch.manual_seed(0)
    pipeline = train_ddpm.DDPMObjective.from_args(args).pipeline(CourseworkCNN(hidden_channels=(2, 2, 2, 2)))
    steps = use_sampler(pipeline, "dpmsolver-sde", 4)
    pipeline.set_progress_bar_config(disable=True)

    def draw(seed, start_seed=0):
        start = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(start_seed))
        pipeline.scheduler.set_timesteps(steps)
        image, generator = start * pipeline.scheduler.init_noise_sigma, torch.Generator().manual_seed(seed)
        for t in pipeline.scheduler.timesteps:
            image = pipeline.scheduler.step(pipeline.unet(image, t).sample, t, image, generator=generator).prev_sample
        return image

    torch.testing.assert_close(draw(1), draw(1), rtol=0, atol=0)
    assert (draw(1) - draw(2)).abs().mean() > 0.01


def test_native_bf16_is_read_from_the_cpu_flags():
    assert cpu_has_native_bf16("processor : 0\nflags : fpu sse2 avx512f avx512_bf16\n")
    assert cpu_has_native_bf16("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert not cpu_has_native_bf16("flags : fpu sse2 avx2 avx512f\n")
    assert not cpu_has_native_bf16("")


def test_auto_precision_follows_a_configured_launcher_else_the_hardware(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert auto_mixed_precision(use_cpu=True) == "fp16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # plain `accelerate launch` sets "no": not a choice
    assert auto_mixed_precision(use_cpu=True) == ("bf16" if cpu_has_native_bf16() else "no")


def test_the_run_records_the_precision_it_used(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    folder = tmp_path / "run"
    argv = ["--output_dir", str(folder), *TINY_RUN, "--max_train_samples", "64", "--max_train_steps", "1"]
    args = train_ddpm.parse_args(argv)
    trainer = train_ddpm.run_training(args, train_ddpm.DDPMObjective.from_args(args), argv=["train_ddpm.py", *argv])
    recorded = json.loads((folder / "training_args.json").read_text())
    expected = "bf16" if cpu_has_native_bf16() else "no"
    assert recorded["args"]["mixed_precision"] == expected == trainer.accelerator.mixed_precision


def test_the_ancestral_sampler_takes_every_training_step_of_the_model_by_default():
    """Without a step count, `ddpm` samples all T steps of this model (not DDPMPipeline's default 1,000) and the fast
    samplers their default steps, at most T."""
    from diffusers import DDPMPipeline, DDPMScheduler

    from diffusion_lab.sampling import use_sampler

    pipeline = DDPMPipeline(unet=CourseworkCNN(hidden_channels=(2, 2, 2, 2), num_train_timesteps=10), scheduler=DDPMScheduler(num_train_timesteps=10))
    assert use_sampler(pipeline, "ddpm") == 10
    assert use_sampler(pipeline, "ddpm", 4) == 4 and use_sampler(pipeline, "dpmsolver-sde") == 10
    images = pipeline(batch_size=1, num_inference_steps=use_sampler(pipeline, "ddim"), output_type="np").images
    assert images.shape == (1, 28, 28, 1)


@pytest.mark.parametrize("own_length, lr_scheduler", [(["--own_length"], "constant_with_warmup"), ([], "cosine")])
def test_a_run_of_its_own_length_is_scored_at_its_end_before_its_marks(tmp_path, own_length, lr_scheduler):
    """--own_length, or a decaying learning rate (the CPU recipe's cosine) without it: the run's own 1 epoch of 4 steps
    (unbounded steps would train on towards the 50-minute mark, at the cosine's peak)."""
    output = tmp_path / "run"
    result = run_script(ROOT / "benchmarks" / "time_to_quality.py", "--marks", "50", "100", "--num_samples", "8", "--json", "--draws", "3",
                        *own_length, "--output_dir", output, "--", *TINY_RUN, "--max_train_samples", "128",
                        "--num_epochs", "1", "--lr_scheduler", lr_scheduler)
    assert result.returncode == 0, result.stderr[-3000:]
    curve = json.loads(result.stdout.strip().splitlines()[-1])
    [point] = curve["points"]
    assert point["run_end"] and point["steps"] == 4 and curve["finished"]
    # Three draws from different noise, the point's FD their mean and ratio that mean over the floor.
    draws = point["digit_fd_draws"]
    assert curve["draws"] == 3 and len(set(draws)) == 3
    assert point["digit_fd"] == pytest.approx(sum(draws) / 3) and point["ratio"] == pytest.approx(point["digit_fd"] / point["floor"])
    mean = sum(draws) / 3
    assert point["digit_fd_sd"] == pytest.approx((sum((fd - mean) ** 2 for fd in draws) / 2) ** 0.5)
    assert point["mark_minutes"] == round(point["minutes"], 1) < 50
    assert (output / "time_to_quality" / f"mark_{point['mark_minutes']:g}.png").is_file()


@pytest.mark.parametrize("flags, message", [
    (("--marks", "10", "5"), "--marks must be positive and increasing"),
    (("--draws", "0"), "--draws must be at least 1"),
])
def test_the_benchmark_refuses_bad_marks_and_draws_before_training(tmp_path, flags, message):
    result = run_script(ROOT / "benchmarks" / "time_to_quality.py", "--output_dir", tmp_path / "run", *flags)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "run").exists()


def test_the_sampler_comparison_refuses_a_repeated_seed(tmp_path):
    result = run_script(ROOT / "benchmarks" / "sampler_quality.py", tmp_path / "no-pipeline", "--seed", "0", "0")
    assert result.returncode == 2 and "give each seed once" in result.stderr
