"""Class-conditional training and sampling with classifier-free guidance (issue 16)."""

import json

import datasets
import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UNet2DModel,
)
from helpers import TINY_RUN, run_script, run_two_cpu_ranks
from PIL import Image
from safetensors.torch import load_file

from diffusion_lab.commands import train_cold, train_ddpm
from diffusion_lab.data import SHIPPED_MNIST, DataError, load_image_caches
from diffusion_lab.models import build_model
from diffusion_lab.pipelines import ClassConditionalDDPMPipeline, ColdDiffusionPipeline
from diffusion_lab.pipelines.export import load_pipeline, save_pipeline
from diffusion_lab.training.ddpm_objective import DDPMObjective

CONDITIONAL_RUN = [*TINY_RUN, "--class_conditional", "--learning_rate", "2e-3"]
DIGITS = [str(k) for k in range(10)]


def tiny_unet(num_classes=10, sample_size=8):
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=sample_size, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
        num_class_embeds=None if num_classes is None else num_classes + 1,
    )


def tiny_pipeline(class_names=DIGITS):
    return ClassConditionalDDPMPipeline(tiny_unet(), DDPMScheduler(num_train_timesteps=20), class_names=class_names)


def run(pipeline, seed=3, **kwargs):
    pipeline.set_progress_bar_config(disable=True)
    return pipeline(generator=torch.Generator().manual_seed(seed), num_inference_steps=6, output_type="pt", **kwargs).images


def ddpm_loop(pipeline, labels, seed=3, guidance=None):
    """The sampling loop written out: plain conditional (or null-class) predictions, or the CFG formula."""
    unet, scheduler = pipeline.unet, pipeline.scheduler
    scheduler.set_timesteps(6)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((len(labels), 1, 8, 8), generator=generator)
    null = torch.full_like(labels, 10)
    for t in scheduler.timesteps:
        if guidance is None:
            eps = unet(x, t, class_labels=labels).sample
        else:
            eps_u, eps_c = unet(x, t, class_labels=null).sample, unet(x, t, class_labels=labels).sample
            eps = eps_u + guidance * (eps_c - eps_u)
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    return (x / 2 + 0.5).clamp(0, 1)


# -- models ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, embedding_width", [("unet", 32 * 4), ("cnn", 16)])
def test_label_embedding_has_a_row_per_class_plus_the_null_class(name, embedding_width):
    model = build_model(name, 28, 1, 1000, num_classes=10)
    assert model.config.num_class_embeds == 11
    assert tuple(model.class_embedding.weight.shape) == (11, embedding_width)
    x, t = torch.randn(3, 1, 28, 28), torch.tensor([5, 500, 999])
    with torch.no_grad():
        outputs = [model(x, t, class_labels=torch.full((3,), k)).sample for k in (0, 7, 10)]  # 10: the null class
        assert all(out.shape == (3, 1, 28, 28) for out in outputs)
        assert not torch.equal(outputs[0], outputs[1]) and not torch.equal(outputs[1], outputs[2])
        with pytest.raises(IndexError):
            model(x, t, class_labels=torch.full((3,), 11))  # past the null class
        with pytest.raises(ValueError, match="class_labels should be provided"):
            model(x, t)
    unconditional = build_model(name, 28, 1, 1000)
    assert unconditional.config.num_class_embeds is None and unconditional.class_embedding is None


def test_label_dropout_replaces_the_asked_fraction_by_the_null_class():
    objective = DDPMObjective(DDPMScheduler())
    objective.use_classes(DIGITS, label_dropout=0.25)
    labels = torch.arange(10).repeat(4000)
    dropped = objective.drop_labels(labels, generator=torch.Generator().manual_seed(0))
    is_null = dropped == 10
    assert abs(is_null.float().mean().item() - 0.25) < 0.01
    assert torch.equal(dropped[~is_null], labels[~is_null])  # the others are untouched
    assert torch.equal(objective.drop_labels(labels, generator=torch.Generator().manual_seed(0)), dropped)  # seeded
    objective.use_classes(DIGITS, label_dropout=0.0)
    assert torch.equal(objective.drop_labels(labels), labels)


# -- guidance ----------------------------------------------------------------------------------------------------


def test_guidance_1_is_the_plain_conditional_model_and_0_the_unconditional_one_exactly():
    pipeline = tiny_pipeline()
    labels = torch.tensor([7, 3, 0])
    conditional = run(pipeline, class_labels=[7, "3", 0], guidance_scale=1)
    assert torch.equal(conditional, ddpm_loop(pipeline, labels))
    unconditional = run(pipeline, class_labels=labels, guidance_scale=0)
    assert torch.equal(unconditional, ddpm_loop(pipeline, torch.full((3,), 10)))
    assert torch.equal(unconditional, run(pipeline, batch_size=3))  # no labels: the null class
    guided = run(pipeline, class_labels=labels, guidance_scale=3)
    assert torch.allclose(guided, ddpm_loop(pipeline, labels, guidance=3.0), atol=1e-5)
    assert not torch.allclose(guided, conditional, atol=1e-3)


def test_labels_by_name_one_for_the_batch_and_refused_when_unknown():
    pipeline = tiny_pipeline(class_names=[f"class-{k}" for k in range(10)])
    assert torch.equal(run(pipeline, class_labels="class-7", batch_size=2), run(pipeline, class_labels=[7, 7]))
    with pytest.raises(ValueError, match="'seven' is not a class of this model"):
        run(pipeline, class_labels="seven")
    with pytest.raises(ValueError, match="outside 0..9"):
        run(pipeline, class_labels=[10])
    with pytest.raises(ValueError, match="2 class labels were given for batch_size 3"):
        run(pipeline, class_labels=[1, 2], batch_size=3)


def test_fast_samplers_swap_in():
    pipeline = tiny_pipeline()
    for scheduler_class in (DDIMScheduler, DPMSolverMultistepScheduler):
        pipeline.scheduler = scheduler_class.from_config(pipeline.scheduler.config)
        images = run(pipeline, class_labels=[1, 2], guidance_scale=2)
        assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()


def test_save_and_load_round_trip_with_and_without_remote_code(tmp_path):
    folder = tmp_path / "conditional"
    save_pipeline(tiny_pipeline(), folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_class_conditional", "ClassConditionalDDPMPipeline"]
    assert index["class_names"] == DIGITS and all((folder / f"{name}.py").exists() for name in ("class_guidance", "ancestral_sampling"))
    reference = run(tiny_pipeline(), class_labels=[7, 1], guidance_scale=3)
    loaded = load_pipeline(str(folder))  # our classes, no code from the folder
    assert type(loaded) is ClassConditionalDDPMPipeline and list(loaded.config.class_names) == DIGITS
    assert torch.equal(run(loaded, class_labels=["7", "1"], guidance_scale=3), reference)
    np.save(tmp_path / "reference.npy", reference.numpy())
    code = (
        "import sys, numpy as np, torch\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"  # as here (conftest): the thread count changes float sums
        "from diffusers import DiffusionPipeline\n"
        f"p = DiffusionPipeline.from_pretrained({str(folder)!r}, trust_remote_code=True)\n"
        "assert 'diffusion_lab' not in sys.modules, 'diffusion_lab was imported'\n"
        "p.set_progress_bar_config(disable=True)\n"
        "x = p(class_labels=['7', 1], guidance_scale=3, num_inference_steps=6, generator=torch.Generator().manual_seed(3), output_type='pt').images\n"
        f"assert np.array_equal(x.numpy(), np.load({str(tmp_path / 'reference.npy')!r})), 'samples differ'\n"
    )
    result = run_script("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]


# -- data and bad labels -----------------------------------------------------------------------------------------


def labelled_dataset(path, train_labels, test_labels=None, feature=None):
    rng = np.random.default_rng(0)

    def split(labels):
        images = [Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L") for _ in labels]
        features = datasets.Features({"image": datasets.Image(), "label": feature or datasets.Value("int64")}) if feature or all(
            isinstance(label, int) for label in labels) else None
        data = datasets.Dataset.from_dict({"image": images, "label": list(labels)}, features=features)
        return data.cast_column("image", datasets.Image())

    splits = {"train": split(train_labels)}
    if test_labels is not None:
        splits["test"] = split(test_labels)
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return str(path)


def test_labels_travel_with_their_images_through_the_cache():
    train, validation = load_image_caches(max_train_samples=256, label_column="label")
    assert train.num_classes == 10 and train.class_names == DIGITS and train.labels.dtype == np.int64
    expected = np.asarray(datasets.load_dataset(str(SHIPPED_MNIST), split="train[:256]")["label"])
    assert np.array_equal(train.labels, expected) and len(validation.labels) == len(validation)
    indices = np.array([200, 3, 77])
    assert train.batch_labels(indices).tolist() == expected[np.sort(indices)].tolist()  # the order of `batch`


def test_integer_column_without_class_label_feature_counts_distinct_values(tmp_path):
    path = labelled_dataset(tmp_path / "ints", [0, 2, 1, 2, 0, 1], [1, 0])
    train, validation = load_image_caches(dataset_name=path, label_column="label")
    assert train.num_classes == 3 and train.class_names == ["0", "1", "2"] and validation.labels.tolist() == [1, 0]


@pytest.mark.parametrize("case, message", [
    ("missing", "the dataset has no column 'digit'"),
    ("strings", "column 'label' holds string values, not integer class labels"),
    ("floats", "column 'label' holds float64 values, not integer class labels"),
    ("out_of_range", "validation image 1 has label 5, outside 0..2"),
    ("gaps", "train image 2 has label 7, outside 0..2"),
    ("negative", "train image 1 has label -1, outside 0..2"),
    ("null", "column 'label' image 1 has no label (null)"),  # refused, never counted as a fourth class
])
def test_bad_labels_are_refused_with_one_line(tmp_path, case, message):
    column = "label"
    if case == "missing":
        path, column = labelled_dataset(tmp_path / case, [0, 1, 2], [0]), "digit"
    elif case == "strings":
        path = labelled_dataset(tmp_path / case, ["a", "b", "c"], ["a"])
    elif case == "floats":
        path = labelled_dataset(tmp_path / case, [0.0, 1.0, 2.0], [0.0])
    elif case == "out_of_range":
        path = labelled_dataset(tmp_path / case, [0, 1, 2], [0, 5])
    elif case == "gaps":
        path = labelled_dataset(tmp_path / case, [0, 1, 7], [0])
    elif case == "null":
        path = labelled_dataset(tmp_path / case, [0, None, 1, 2], [0])
    else:  # ClassLabel's "missing label" value
        path = labelled_dataset(tmp_path / case, [0, -1, 2], [0], feature=datasets.ClassLabel(names=["x", "y", "z"]))
    with pytest.raises(DataError) as error:
        load_image_caches(dataset_name=path, label_column=column)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_bad_labels_exit_2_with_one_line_from_the_command(tmp_path):
    path = labelled_dataset(tmp_path / "data", [0, 1, 2], [0])
    result = run_script("train_ddpm.py", "--output_dir", tmp_path / "o", "--dataset_name", path, "--class_conditional",
                        "--label_column", "digit", "--logger", "none")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --class_conditional: the dataset has no column 'digit'"), lines
    assert train_ddpm.parse_args([]).label_column == "label" and train_ddpm.parse_args([]).label_dropout == 0.1
    with pytest.raises(SystemExit):  # refused where it is parsed: tests/test_command_flags.py
        train_ddpm.parse_args(["--label_dropout", "1", "--output_dir", str(tmp_path / "p")])


# -- training ----------------------------------------------------------------------------------------------------


def weights(folder):
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


def train(script, folder, *extra):
    args = script.parse_args(["--output_dir", str(folder), *CONDITIONAL_RUN, *map(str, extra)])
    objective = (train_cold.ColdObjective if script is train_cold else train_ddpm.DDPMObjective).from_args(args)
    return script.run_training(args, objective, argv=["x.py"])


def test_each_batch_carries_the_labels_of_its_images(tmp_path, monkeypatch):
    seen = []
    original = DDPMObjective.loss

    def loss(self, model, clean, generator=None, class_labels=None):
        if generator is None:
            seen.append((clean.clone(), class_labels.clone()))
        return original(self, model, clean, generator, class_labels)

    monkeypatch.setattr(DDPMObjective, "loss", loss)
    trainer = train(train_ddpm, tmp_path / "run", "--max_train_steps", "2", "--label_dropout", "0")
    cache = trainer.train_data
    for clean, labels in seen:
        for image, label in zip(clean, labels):
            index = next(i for i in range(len(cache)) if torch.equal(cache.batch(np.array([i]))[0], image))
            assert cache.labels[index] == label
    assert len(seen) == 2


def test_des_run_with_ema_resumes_exactly_and_saves_a_conditional_pipeline(tmp_path):
    common = ["--noise_schedule", "entropy_scaled", "--use_ema", "--checkpointing_steps", "2"]
    train(train_ddpm, tmp_path / "whole", "--max_train_steps", "4", *common)
    train(train_ddpm, tmp_path / "resumed", "--max_train_steps", "2", *common)
    train(train_ddpm, tmp_path / "resumed", "--max_train_steps", "4", *common, "--resume_from_checkpoint", "latest")
    whole, resumed = weights(tmp_path / "whole"), weights(tmp_path / "resumed")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    pipeline = load_pipeline(str(tmp_path / "whole"))
    assert type(pipeline) is ClassConditionalDDPMPipeline and type(pipeline.scheduler).__name__ == "EntropyScaledDDPMScheduler"
    assert pipeline.unet.config.num_class_embeds == 11 and list(pipeline.config.class_names) == DIGITS
    images = run(pipeline, class_labels=[7, 7], guidance_scale=3)
    assert images.shape == (2, 1, 28, 28)
    # The run's sample grid has a row per class: --eval_batch_size 8 < 10 classes gives one image of each.
    grid = Image.open(sorted((tmp_path / "whole" / "samples").glob("epoch_*.png"))[-1])
    assert grid.size == (2 + 30, 2 + 10 * 30)


def test_conditional_cold_diffusion_generates_and_restores_with_labels(tmp_path):
    folder = tmp_path / "cold"
    train(train_cold, folder, "--max_train_steps", "2", "--degradation", "columns", "--group_size", "7", "--start_samples", "40")
    pipeline = ColdDiffusionPipeline.from_pretrained(str(folder))
    assert pipeline.unet.config.num_class_embeds == 11 and list(pipeline.config.class_names) == DIGITS
    pipeline.set_progress_bar_config(disable=True)

    def cold(**kwargs):
        return pipeline(generator=torch.Generator().manual_seed(0), output_type="pt", **kwargs).images

    generated = cold(class_labels=[7, "3"], guidance_scale=3)
    assert generated.shape == (2, 1, 28, 28)
    assert torch.equal(cold(class_labels=[7, 3], guidance_scale=0), cold(batch_size=2))  # 0: unconditional
    originals = torch.rand(2, 1, 28, 28) * 2 - 1
    restored = cold(images=originals, class_labels=[1, 2])
    assert restored.shape == (2, 1, 28, 28) and not torch.equal(restored, cold(images=originals, class_labels=[5, 6]))


def test_sample_command_draws_a_row_per_class_and_a_single_class(tmp_path):
    folder = tmp_path / "conditional"
    save_pipeline(tiny_pipeline(), folder)
    result = run_script("-m", "diffusion_lab", "sample", folder, "--num_images", "2", "--scheduler", "ddim", "--num_inference_steps", "3",
                        "--output_dir", tmp_path / "all")
    assert result.returncode == 0, result.stderr[-2000:]
    saved = np.load(tmp_path / "all" / "samples.npz")
    assert saved["images"].shape == (20, 8, 8, 1) and saved["labels"].tolist() == [k for k in range(10) for _ in range(2)]
    assert Image.open(tmp_path / "all" / "grid.png").size == (2 + 2 * 10, 2 + 10 * 10)  # 2 columns, a row per class
    result = run_script("-m", "diffusion_lab", "sample", folder, "--class_labels", "7", "--guidance_scale", "3", "--num_images", "3",
                        "--num_inference_steps", "3", "--scheduler", "ddim", "--output_dir", tmp_path / "seven")
    assert result.returncode == 0, result.stderr[-2000:]
    assert np.load(tmp_path / "seven" / "samples.npz")["labels"].tolist() == [7, 7, 7]
    result = run_script("-m", "diffusion_lab", "sample", folder, "--class_labels", "12", "--output_dir", tmp_path / "bad")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: --class_labels: class label 12 is outside 0..9: this model has 10 classes."]


@pytest.mark.slow
def test_two_processes_train_a_conditional_model_in_sync(tmp_path):
    output_dir = tmp_path / "run"
    result = run_two_cpu_ranks(tmp_path, 29527, "--output_dir", output_dir, *TINY_RUN, "--max_train_steps", "2", "--train_batch_size", "16",
                               "--class_conditional")
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank_{r}.json").read_text()) for r in range(2)]
    seen = [{i for batch in rank["indices"] for i in batch} for rank in ranks]
    assert seen[0].isdisjoint(seen[1])
    trained = [load_file(tmp_path / f"weights_{r}.safetensors") for r in range(2)]
    assert "class_embedding.weight" in trained[0]
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])
    assert type(load_pipeline(str(output_dir))) is ClassConditionalDDPMPipeline


# -- evaluation --------------------------------------------------------------------------------------------------


def mnist_test(count):
    from diffusion_lab.evaluation.image_sources import load_dataset_images

    images, labels = load_dataset_images(split=f"test[:{count}]", label_column="label")
    return images, labels


def test_class_accuracy_per_class_reads_real_digits_and_catches_wrong_labels():
    from diffusion_lab.evaluation import evaluate_images

    images, labels = mnist_test(300)
    right = evaluate_images(images[:100], images[100:], images_range="uint8", reference_range="uint8", labels=labels[:100])
    assert right["class_accuracy"] > 0.95 and len(right["class_accuracy_per_class"]) == 10
    wrong = evaluate_images(images[:100], images[100:], images_range="uint8", reference_range="uint8", labels=(labels[:100] + 1) % 10)
    assert wrong["class_accuracy"] < 0.05
    counts = torch.bincount(labels[:100], minlength=10)
    assert [a is None for a in right["class_accuracy_per_class"]] == [bool(c == 0) for c in counts]


def test_fd_dinov2_with_a_small_random_dinov2_offline(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    from diffusion_lab.evaluation import evaluate_images
    from diffusion_lab.evaluation.dinov2 import Dinov2Features

    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                     image_size=28, patch_size=14))
    assert Dinov2Features(model, image_size=28)(torch.zeros(3, 1, 28, 28)).shape == (3, 32)
    images, _ = mnist_test(400)
    noise = torch.randint(0, 256, (100, 1, 28, 28), dtype=torch.uint8)
    common = dict(images_range="uint8", reference_range="uint8", dinov2=model, dinov2_image_size=28)
    real = evaluate_images(images[:100], images[100:], **common)
    fake = evaluate_images(noise, images[100:], **common)
    assert real["fd_dinov2_real"] == fake["fd_dinov2_real"] and fake["fd_dinov2"] > real["fd_dinov2"]
    skipped = evaluate_images(noise, images[100:], images_range="uint8", reference_range="uint8", dinov2=str(tmp_path / "no-weights"))
    assert "fd_dinov2" not in skipped
    assert any(note.startswith("FD-DINOv2 skipped: no DINOv2 weights") for note in skipped["notes"])


def test_guidance_sweep_writes_a_table_and_a_plot(tmp_path):
    from diffusion_lab.commands.evaluate import main as evaluate

    folder = tmp_path / "conditional"
    save_pipeline(ClassConditionalDDPMPipeline(tiny_unet(sample_size=28), DDPMScheduler(num_train_timesteps=20), class_names=DIGITS), folder)
    output = tmp_path / "sweep.json"
    result = evaluate([str(folder), "--num_samples", "20", "--num_inference_steps", "2", "--guidance_scale", "0", "1", "3",
                       "--output", str(output), "--dinov2_model", "none", "--batch_size", "20"])
    sweep = result["guidance_sweep"]
    assert [row["guidance_scale"] for row in sweep] == [0, 1, 3] and all(row["num_samples"] == 20 for row in sweep)
    assert all(len(row["class_accuracy_per_class"]) == 10 and 0 <= row["class_accuracy"] <= 1 for row in sweep)
    table = output.with_suffix(".md").read_text().splitlines()
    assert table[0].startswith("| w | digit FD | digit IS | class accuracy | 0 | 1 |") and len([line for line in table if line.startswith("| ")]) == 4
    assert output.with_suffix(".png").stat().st_size > 0 and json.loads(output.read_text())["guidance_sweep"][2]["guidance_scale"] == 3


@pytest.mark.slow
def test_a_short_real_run_draws_digits_the_classifier_reads_as_their_class(tmp_path):
    """Cold diffusion with a growing mask (2 levels): the fully masked start holds nothing, so what is drawn comes
    from the label alone. 100 steps of a small UNet on 2,048 digits; 10 samples of each digit at guidance 3."""
    from diffusion_lab.evaluation import DigitClassifier

    config = tmp_path / "small_unet.json"
    config.write_text(json.dumps({
        "_class_name": "UNet2DModel", "sample_size": 28, "in_channels": 1, "out_channels": 1, "block_out_channels": [16, 32],
        "layers_per_block": 1, "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"],
        "norm_num_groups": 8,
    }))
    folder = tmp_path / "real"
    train(train_cold, folder, "--model_config_name_or_path", config, "--degradation", "mask", "--rings_per_level", "7",
          "--max_train_samples", "2048", "--train_batch_size", "32", "--learning_rate", "3e-3", "--max_train_steps", "100",
          "--loss", "mse", "--start_samples", "200", "--start_components", "2", "--checkpointing_steps", "1000",
          "--save_images_epochs", "100")
    pipeline = load_pipeline(str(folder))
    pipeline.set_progress_bar_config(disable=True)
    labels = torch.arange(10).repeat_interleave(10)
    images = pipeline(class_labels=labels, guidance_scale=3, generator=torch.Generator().manual_seed(0), output_type="pt").images
    predicted = DigitClassifier.from_file()(images * 2 - 1).argmax(dim=1)
    per_class = [(predicted[labels == k] == k).float().mean().item() for k in range(10)]
    above_chance = sum(accuracy > 0.1 for accuracy in per_class)
    assert above_chance >= 6, per_class  # most classes read as themselves more often than chance (10 %)


def test_the_sampler_comparison_draws_every_class_of_a_conditional_pipeline(tmp_path):
    """sampler_quality draws N / K images of each class with the guidance asked for: w changes the images only
    where labels are given (the null class alone would make every w the same), so the two FDs differ."""
    folder = tmp_path / "conditional"
    save_pipeline(ClassConditionalDDPMPipeline(tiny_unet(sample_size=28), DDPMScheduler(num_train_timesteps=20), class_names=DIGITS), folder)
    reports = {}
    for scale in ("0", "3"):
        result = run_script("benchmarks/sampler_quality.py", folder, "--num_samples", "20", "--batch_size", "20",
                            "--samplers", "ddpm:2", "--guidance_scale", scale, "--json")
        assert result.returncode == 0, result.stderr[-3000:]
        reports[scale] = json.loads(result.stdout.strip().splitlines()[-1])
    assert reports["0"]["guidance_scale"] == 0 and reports["3"]["guidance_scale"] == 3
    assert reports["0"]["rows"][0]["digit_fd"] != reports["3"]["rows"][0]["digit_fd"]

    result = run_script("benchmarks/sampler_quality.py", folder, "--num_samples", "5", "--samplers", "ddpm:2")
    assert result.returncode == 1 and "--num_samples 5 is fewer than the 10 classes drawn" in result.stderr

    unconditional = tmp_path / "unconditional"
    save_pipeline(DDPMPipeline(tiny_unet(num_classes=None, sample_size=28), DDPMScheduler(num_train_timesteps=20)), unconditional)
    result = run_script("benchmarks/sampler_quality.py", unconditional, "--samplers", "ddpm:2", "--guidance_scale", "2")
    assert result.returncode == 1 and "--guidance_scale applies to class-conditional pipelines (trained with --class_conditional) and autoguided ones only" in result.stderr


def test_the_runs_evaluation_draws_an_equal_share_of_each_class_over_all_its_batches(tmp_path, monkeypatch):
    """In-run scoring draws N images in batches of --eval_batch_size: the classes are shared out over all N (2 of each
    of 10 classes in 20 images), not over each batch (a batch of 4 would then hold classes 0, 2, 5 and 7 only)."""
    import argparse

    from accelerate.state import AcceleratorState

    from diffusion_lab.training import loop
    from diffusion_lab.training.arguments import add_training_args, validate_training_args
    from diffusion_lab.training.ddpm_objective import add_ddpm_args

    parser = argparse.ArgumentParser()
    add_training_args(parser)
    add_ddpm_args(parser)
    args = parser.parse_args(["--model", "cnn", "--class_conditional", "--max_train_samples", "64", "--train_batch_size", "16", "--eval_batch_size", "4",
                              "--logger", "none", "--mixed_precision", "no", "--output_dir", str(tmp_path / "run")])
    validate_training_args(args)
    AcceleratorState._reset_state(reset_partial_state=True)
    trainer = loop.Trainer(args, DDPMObjective.from_args(args), ["train_ddpm.py"])
    drawn = []

    def record(pipeline, num_images, generator, *rest, class_labels=None, **kwargs):
        drawn.append(class_labels)
        return torch.zeros(num_images, 1, 28, 28)

    monkeypatch.setattr(loop, "draw", record)
    assert trainer.generate(20, "scoring").shape == (20, 1, 28, 28)
    trainer.release_run_folder()
    assert [len(labels) for labels in drawn] == [4] * 5
    assert torch.cat(drawn).tolist() == [label for label in range(10) for _ in range(2)]
