"""Cluster-conditional training (--cluster_conditioning K): k-means on the pixels, the model trained on each image's
cluster, and a pipeline that draws the clusters itself, so that it is an unconditional generator (issue 24)."""

import json

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from helpers import TINY_RUN, run_script, run_with_diffusers_only
from safetensors.torch import load_file

from diffusion_lab.commands import train_ddpm
from diffusion_lab.data import clusters
from diffusion_lab.data.clusters import cluster_sizes, kmeans, nearest_centroids, pixel_vectors
from diffusion_lab.hub import model_card
from diffusion_lab.pipelines import ClusterConditionalDDPMPipeline
from diffusion_lab.pipelines.export import load_pipeline, save_pipeline
from diffusion_lab.pipelines.pipeline_cluster_conditional import draw_clusters
from diffusion_lab.sampling import class_labels_for, generate, guidance_kwargs, is_class_conditional
from diffusion_lab.training import cluster_conditioning, loop
from diffusion_lab.training.arguments import ArgumentError
from diffusion_lab.training.run_pipeline import load_run_pipeline

CLUSTER_RUN = [*TINY_RUN, "--cluster_conditioning", "3", "--autoguidance_scale", "1"]


def train(folder, *extra):
    args = train_ddpm.parse_args(["--output_dir", str(folder), *CLUSTER_RUN, *map(str, extra)])
    return train_ddpm.run_training(args, train_ddpm.DDPMObjective.from_args(args), argv=["x.py"])


def tiny_pipeline(sizes=(0.5, 0.25, 0.25), guide=False, sample_size=8):
    def unet(seed):
        torch.manual_seed(seed)
        return UNet2DModel(sample_size=sample_size, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                           down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                           norm_num_groups=4, num_class_embeds=len(sizes) + 1)

    return ClusterConditionalDDPMPipeline(unet(0), DDPMScheduler(num_train_timesteps=20), cluster_sizes=list(sizes),
                                          guide_unet=unet(1) if guide else None, guidance_scale=2.0 if guide else 1.0)


def run(pipeline, seed=3, batch_size=4, **kwargs):
    pipeline.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    return pipeline(batch_size=batch_size, generator=generator, num_inference_steps=5, output_type="pt", **kwargs).images


# -- k-means -----------------------------------------------------------------------------------------------------


def test_kmeans_finds_two_separated_groups_and_their_means():
    points = torch.tensor([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0], [10.0, 2.0]])
    for seed in range(5):  # whichever points k-means++ starts from
        centroids, assignments = kmeans(points, 2, seed)
        first = assignments[0].item()
        assert assignments.tolist() == [first, first, 1 - first, 1 - first, 1 - first]
        assert torch.allclose(centroids[first], torch.tensor([0.0, 0.5]))
        assert torch.allclose(centroids[1 - first], torch.tensor([10.0, 1.0]))


def test_lloyd_iterates_to_the_fixed_point_a_hand_computation_gives():
    # 1-D points 0, 2, 3, 9, 10 with k = 2 from any start end at {0, 2, 3} (mean 5/3) and {9, 10} (mean 9.5).
    points = torch.tensor([[0.0], [2.0], [3.0], [9.0], [10.0]])
    centroids, assignments = kmeans(points, 2, seed=1)
    low = assignments[0].item()
    assert sorted(centroids.squeeze(1).tolist()) == pytest.approx([5 / 3, 9.5])
    assert (assignments == low).tolist() == [True, True, True, False, False]


def test_kmeans_is_seeded_and_refuses_impossible_cluster_counts():
    points = torch.rand(300, 6, generator=torch.Generator().manual_seed(0))
    first, again, other = kmeans(points, 7, seed=3), kmeans(points, 7, seed=3), kmeans(points, 7, seed=4)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    for k in (0, 301):
        with pytest.raises(ValueError, match=f"needs 1 to 300 clusters for 300 images, not {k}"):
            kmeans(points, k, seed=0)


def test_kmeans_on_a_subset_puts_every_point_in_its_nearest_cluster(monkeypatch):
    monkeypatch.setattr(clusters, "FIT_POINTS", 40)
    points = torch.cat([torch.randn(100, 2, generator=torch.Generator().manual_seed(0)) + offset for offset in (0.0, 20.0)])
    centroids, assignments = kmeans(points, 2, seed=0)
    assert torch.equal(assignments, torch.cdist(points, centroids).argmin(dim=1))
    assert sorted(torch.bincount(assignments).tolist()) == [100, 100]  # the two groups, though 40 points were fitted
    assert torch.equal(kmeans(points, 2, seed=0)[0], centroids)


def test_nearest_centroids_in_chunks_equals_all_at_once_and_ties_go_to_the_lower_index(monkeypatch):
    points = torch.rand(50, 3, generator=torch.Generator().manual_seed(1))
    centroids = torch.rand(4, 3, generator=torch.Generator().manual_seed(2))
    expected = torch.cdist(points, centroids).argmin(dim=1)
    monkeypatch.setattr(clusters, "CHUNK", 7)
    assert torch.equal(nearest_centroids(points, centroids), expected)
    assert nearest_centroids(torch.tensor([[1.0]]), torch.tensor([[0.0], [2.0]])).item() == 0


def test_pixels_are_scaled_to_the_unit_interval_and_sizes_are_shares():
    images = np.array([[[[0, 255], [51, 102]]]], dtype=np.uint8)
    assert pixel_vectors(images)[0].tolist() == pytest.approx([0.0, 1.0, 0.2, 0.4])
    assert cluster_sizes(torch.tensor([0, 2, 2, 2]), 4).tolist() == [0.25, 0.0, 0.75, 0.0]


# -- the pipeline ------------------------------------------------------------------------------------------------


def test_stratified_clusters_fill_a_batch_in_proportion_and_each_image_still_by_the_sizes():
    sizes = [0.5, 0.3, 0.15, 0.05, 0.0]
    draws = draw_clusters(sizes, 20, torch.Generator().manual_seed(0), "cpu")
    assert torch.bincount(draws, minlength=5).tolist() == [10, 6, 3, 1, 0]  # B * share, exactly where it is whole
    counts = torch.stack([torch.bincount(draw_clusters(sizes, 7, torch.Generator().manual_seed(seed), "cpu"), minlength=5)
                          for seed in range(2000)])
    # 7 * share = 3.5, 2.1, 1.05, 0.35: each count is its floor or its ceiling, never further off as i.i.d. draws are.
    assert counts.min(0).values.tolist() == [3, 2, 1, 0, 0] and counts.max(0).values.tolist() == [4, 3, 2, 1, 0]
    assert counts.float().mean(0).tolist() == pytest.approx([3.5, 2.1, 1.05, 0.35, 0.0], abs=0.05)
    first_images = torch.stack([draw_clusters(sizes, 7, torch.Generator().manual_seed(seed), "cpu")[0] for seed in range(4000)])
    assert torch.bincount(first_images, minlength=5).div(4000).tolist() == pytest.approx(sizes, abs=0.025)  # random order
    assert torch.equal(draw_clusters(sizes, 7, torch.Generator().manual_seed(3), "cpu"),
                       draw_clusters(sizes, 7, torch.Generator().manual_seed(3), "cpu"))
    with pytest.raises(ValueError, match="cluster_draws 'random' is not one of stratified, iid: pass one of them"):
        draw_clusters(sizes, 7, None, "cpu", draws="random")


def test_iid_clusters_are_drawn_by_their_sizes_from_the_generator():
    sizes = [0.7, 0.3, 0.0]
    draws = draw_clusters(sizes, 20000, torch.Generator().manual_seed(0), "cpu", draws="iid")
    assert set(draws.tolist()) == {0, 1}  # an empty cluster is never drawn
    assert (draws == 0).float().mean().item() == pytest.approx(0.7, abs=0.01)
    again = draw_clusters(sizes, 20000, torch.Generator().manual_seed(0), "cpu", draws="iid")
    assert torch.equal(draws, again)
    counts = [(draw_clusters(sizes, 10, torch.Generator().manual_seed(seed), "cpu", draws="iid") == 0).sum().item() for seed in range(200)]
    assert min(counts) <= 5 and max(counts) >= 9  # binomial counts, scattered around 7
    per_image = draw_clusters(sizes, 3, [torch.Generator().manual_seed(seed) for seed in (5, 6, 7)], "cpu")
    alone = [draw_clusters(sizes, 1, [torch.Generator().manual_seed(seed)], "cpu").item() for seed in (5, 6, 7)]
    assert per_image.tolist() == alone
    with pytest.raises(ValueError, match="2 generators were given for batch_size 3"):
        draw_clusters(sizes, 3, [torch.Generator(), torch.Generator()], "cpu")


def test_the_pipeline_samples_each_image_given_its_drawn_cluster():
    pipeline = tiny_pipeline()
    images = run(pipeline, seed=3)
    # Written out: the clusters drawn first from the generator (stratified: a batch of 4 holds 2, 1, 1), then the
    # DDPM loop with them as labels.
    generator = torch.Generator().manual_seed(3)
    labels = draw_clusters([0.5, 0.25, 0.25], 4, generator, "cpu")
    assert sorted(labels.tolist()) == [0, 0, 1, 2]
    scheduler = pipeline.scheduler
    scheduler.set_timesteps(5)
    x = torch.randn((4, 1, 8, 8), generator=generator)
    for t in scheduler.timesteps:
        x = scheduler.step(pipeline.unet(x, t, class_labels=labels).sample, t, x, generator=generator).prev_sample
    assert torch.allclose(images, (x / 2 + 0.5).clamp(0, 1), atol=1e-6)
    assert torch.equal(images, run(pipeline, seed=3))


def test_the_pipeline_draws_iid_clusters_when_asked_or_configured_so():
    pipeline = tiny_pipeline()
    iid = run(pipeline, seed=3, cluster_draws="iid")
    assert not torch.equal(iid, run(pipeline, seed=3))
    configured = ClusterConditionalDDPMPipeline(pipeline.unet, pipeline.scheduler, cluster_sizes=[0.5, 0.25, 0.25], cluster_draws="iid")
    assert torch.equal(run(configured, seed=3), iid)
    with pytest.raises(ValueError, match="cluster_draws 'even' is not one of stratified, iid"):
        ClusterConditionalDDPMPipeline(pipeline.unet, pipeline.scheduler, cluster_sizes=[0.5, 0.25, 0.25], cluster_draws="even")


def test_given_clusters_are_sampled_as_given_and_checked():
    pipeline = tiny_pipeline()
    # The pipeline's own call is its clusters drawn from the generator, then the loop on them: the same as drawing them
    # with draw_cluster_labels and passing them on with the generator as it is left.
    generator = torch.Generator().manual_seed(3)
    labels = pipeline.draw_cluster_labels(4, generator)
    assert torch.equal(run(pipeline, seed=3), pipeline(batch_size=4, generator=generator, num_inference_steps=5, output_type="pt", class_labels=labels).images)
    ones = pipeline(batch_size=4, generator=torch.Generator().manual_seed(3), num_inference_steps=5, output_type="pt", class_labels=[1] * 4).images
    assert not torch.equal(ones, run(pipeline, seed=3))
    for bad in ([0, 1, 3, 0], [0, 1], [[0, 1], [1, 0]], [-1, 0, 0, 0]):
        with pytest.raises(ValueError, match="class_labels must be 4 cluster indices from 0 to 2, one per image"):
            run(pipeline, class_labels=bad)


def recorded_clusters(pipeline):
    """Record the clusters of each model call (one per image) in a list."""
    seen, forward = [], pipeline.unet.forward

    def recording(sample, timestep, class_labels=None, **kwargs):
        seen.append(class_labels.clone())
        return forward(sample, timestep, class_labels=class_labels, **kwargs)

    pipeline.unet.forward = recording
    return seen


def test_a_set_made_in_batches_is_in_proportion_as_a_whole():
    pipeline = tiny_pipeline(sizes=(0.5, 0.3, 0.2))
    pipeline.set_progress_bar_config(disable=True)
    seen = recorded_clusters(pipeline)
    counts = {}
    for draws in ("stratified", "iid"):
        counts[draws] = []
        for seed in range(40):
            seen.clear()
            generate(pipeline, 10, 3, seed, 1, cluster_draws=draws)  # batches of 3, 3, 3 and 1, one step each
            counts[draws].append(torch.bincount(torch.cat(seen), minlength=3).tolist())
    # Drawn batch by batch, 3 * 0.2 = 0.6 of the last cluster per batch would make 0 to 4 of it; drawn for the set, 2.
    assert all(count == [5, 3, 2] for count in counts["stratified"])
    assert len({tuple(count) for count in counts["iid"]}) > 5
    # One batch: the pipeline's own call.
    alone = run(pipeline, seed=7, batch_size=6)
    assert np.array_equal(generate(pipeline, 6, 6, 7, 5), (alone.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))


def test_autoguidance_combines_both_models_given_the_same_cluster_and_needs_a_guide():
    pipeline = tiny_pipeline(guide=True)
    guided, alone = run(pipeline), run(pipeline, guidance_scale=1)
    assert not torch.allclose(guided, alone, atol=1e-3)
    assert torch.equal(alone, run(tiny_pipeline()))  # w = 1 is the main model alone, as without a guide
    with pytest.raises(ValueError, match="guidance_scale 2 needs a guide model; this pipeline has none"):
        run(tiny_pipeline(), guidance_scale=2)
    with pytest.raises(ValueError, match="2 cluster sizes were given for a model of 3 clusters"):
        ClusterConditionalDDPMPipeline(pipeline.unet, pipeline.scheduler, cluster_sizes=[0.5, 0.5])


def test_it_samples_like_an_unconditional_pipeline_for_the_commands():
    plain, guided = tiny_pipeline(), tiny_pipeline(guide=True)
    assert not is_class_conditional(plain) and class_labels_for(plain, None, 8) is None
    with pytest.raises(ValueError, match="--class_labels applies to class-conditional pipelines only"):
        class_labels_for(plain, ["3"], 8)
    assert guidance_kwargs(plain, None) == {"guidance_scale": 1.0} and guidance_kwargs(guided, None) == {"guidance_scale": 2.0}
    assert guidance_kwargs(guided, 1.5) == {"guidance_scale": 1.5}


@pytest.mark.parametrize("guide", [False, True])
def test_save_and_load_round_trip_with_and_without_remote_code(tmp_path, guide):
    folder = tmp_path / "clusters"
    save_pipeline(tiny_pipeline(guide=guide), folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_cluster_conditional", "ClusterConditionalDDPMPipeline"]
    assert index["cluster_sizes"] == [0.5, 0.25, 0.25] and (folder / "pipeline_autoguided.py").exists()
    assert index["cluster_draws"] == "stratified"
    assert (folder / "guide_unet").is_dir() == guide
    reference = run(tiny_pipeline(guide=guide))
    loaded = load_pipeline(str(folder))
    assert type(loaded) is ClusterConditionalDDPMPipeline and (loaded.guide_unet is not None) == guide
    assert torch.equal(run(loaded), reference)
    np.save(tmp_path / "reference.npy", reference.numpy())
    code = (
        "import sys, numpy as np, torch\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        "from diffusers import DiffusionPipeline\n"
        f"p = DiffusionPipeline.from_pretrained({str(folder)!r}, trust_remote_code=True)\n"
        "assert 'diffusion_lab' not in sys.modules, 'diffusion_lab was imported'\n"
        "p.set_progress_bar_config(disable=True)\n"
        "x = p(batch_size=4, num_inference_steps=5, generator=torch.Generator().manual_seed(3), output_type='pt').images\n"
        f"assert np.array_equal(x.numpy(), np.load({str(tmp_path / 'reference.npy')!r})), 'samples differ'\n"
    )
    run_with_diffusers_only(code, tmp_path)


def test_the_sampler_comparison_draws_the_clusters_as_asked(tmp_path):
    folder = tmp_path / "clusters"
    save_pipeline(tiny_pipeline(sample_size=28), folder)
    reports = {}
    for draws in (None, "iid"):
        result = run_script("benchmarks/sampler_quality.py", folder, "--num_samples", "12", "--batch_size", "12", "--samplers", "ddpm:2",
                            "--json", *(["--cluster_draws", draws] if draws else []))
        assert result.returncode == 0, result.stderr[-3000:]
        reports[draws] = json.loads(result.stdout.strip().splitlines()[-1])
    assert reports[None]["cluster_draws"] == "stratified" and reports["iid"]["cluster_draws"] == "iid"
    assert reports[None]["rows"][0]["digit_fd"] != reports["iid"]["rows"][0]["digit_fd"]
    plain = tmp_path / "plain"
    save_pipeline(DDPMPipeline(UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                                           down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                                           norm_num_groups=4), DDPMScheduler(num_train_timesteps=20)), plain)
    result = run_script("benchmarks/sampler_quality.py", plain, "--samplers", "ddpm:2", "--cluster_draws", "iid")
    assert result.returncode == 1 and "--cluster_draws applies to cluster-conditional pipelines only; DDPMPipeline draws no clusters" in result.stderr


# -- training ----------------------------------------------------------------------------------------------------


def test_a_run_trains_on_the_clusters_of_its_images_and_saves_their_sizes(tmp_path):
    trainer = train(tmp_path / "run", "--max_train_steps", "2")
    cache, objective = trainer.train_data, trainer.objective
    pixels = pixel_vectors(cache.images)
    centroids, assignments = kmeans(pixels, 3, seed=0)  # --seed 0, the default
    assert torch.equal(objective.cluster_centroids, centroids)
    assert cache.labels.tolist() == assignments.tolist() and cache.num_classes == 3
    assert trainer.validation_data.labels.tolist() == nearest_centroids(pixel_vectors(trainer.validation_data.images), centroids).tolist()
    pipeline = load_pipeline(str(tmp_path / "run"))
    assert type(pipeline) is ClusterConditionalDDPMPipeline and pipeline.guide_unet is None
    assert pipeline.config.cluster_sizes == pytest.approx(cluster_sizes(assignments, 3).tolist())
    assert pipeline.unet.config.num_class_embeds == 4
    assert run(pipeline, batch_size=2).shape == (2, 1, 28, 28)
    # The sample grid is a plain grid (the pipeline draws the clusters), not a row per cluster.
    assert trainer.objective.grid_labels(8) is None
    # The trainer's draws of a set (batches of --eval_batch_size 8) hold each cluster in proportion over the whole set.
    seen = []

    def recording_draw(pipeline, num_images, generator, *args, class_labels=None, **kwargs):
        seen.append(class_labels)
        return torch.zeros(num_images, 1, 28, 28)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "draw", recording_draw)
        trainer.generate(30, "set")
    assert [len(labels) for labels in seen] == [8, 8, 8, 6]
    expected = 30 * torch.tensor(pipeline.config.cluster_sizes)
    counts = torch.bincount(torch.cat(seen), minlength=3)
    assert torch.all((counts >= expected.floor()) & (counts <= expected.ceil()))
    card = model_card(tmp_path / "run", "ddpm-clusters")
    assert "conditioned on 3 k-means clusters" in card and "cluster-conditioning" in card and "autoguid" not in card


def test_a_resumed_run_keeps_the_clusters_of_its_checkpoint_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    common = ["--checkpointing_steps", "2", "--use_ema", "--autoguidance_scale", "2"]
    train(tmp_path / "whole", "--max_train_steps", "4", *common)
    train(tmp_path / "resumed", "--max_train_steps", "2", *common)
    saved = load_file(tmp_path / "resumed" / "checkpoint-2" / "objective.safetensors")
    assert saved["cluster_centroids"].shape[0] == 3 and saved["cluster_sizes"].sum().item() == pytest.approx(1)

    def no_kmeans(*args, **kwargs):
        raise AssertionError("a resumed run must take its checkpoint's clusters")

    monkeypatch.setattr(cluster_conditioning, "kmeans", no_kmeans)
    train(tmp_path / "resumed", "--max_train_steps", "4", *common, "--resume_from_checkpoint", "latest")
    for component in ("unet", "guide_unet"):
        whole = load_file(tmp_path / "whole" / component / "diffusion_pytorch_model.safetensors")
        resumed = load_file(tmp_path / "resumed" / component / "diffusion_pytorch_model.safetensors")
        assert all(torch.equal(whole[k], resumed[k]) for k in whole), component
    # A checkpoint's pipeline draws the same clusters, guided as the saved one.
    from_checkpoint, pipeline = load_run_pipeline(str(tmp_path / "whole" / "checkpoint-4")), load_pipeline(str(tmp_path / "whole"))
    assert type(from_checkpoint) is ClusterConditionalDDPMPipeline and from_checkpoint.guide_unet is not None
    assert from_checkpoint.config.cluster_sizes == pipeline.config.cluster_sizes and pipeline.config.guidance_scale == 2
    assert torch.equal(run(from_checkpoint, batch_size=2), run(pipeline, batch_size=2))


def test_resuming_with_another_number_of_clusters_is_refused(tmp_path):
    train(tmp_path / "run", "--max_train_steps", "2", "--checkpointing_steps", "2")
    with pytest.raises(ValueError, match="checkpoint-2 holds 3 clusters, this run asks for --cluster_conditioning 4"):
        cluster_conditioning.saved_centroids(tmp_path / "run" / "checkpoint-2", 4)


@pytest.mark.parametrize("flags, message", [
    (["--class_conditional"], "not with --class_conditional: drop one of the two"),
    (["--noise_schedule", "entropy_scaled"], "not with --noise_schedule entropy_scaled: drop one of the two"),
])
def test_clusters_with_labels_or_entropy_scaled_noise_are_refused(flags, message):
    args = train_ddpm.parse_args(["--cluster_conditioning", "10", "--autoguidance_scale", "1", *flags])
    with pytest.raises(ArgumentError, match=message):
        train_ddpm.DDPMObjective.from_args(args)


def test_the_cpu_recipe_keeps_autoguidance_for_cluster_runs():
    args = train_ddpm.parse_args(["--cluster_conditioning", "20"])
    assert args.autoguidance_scale == 1.5 and train_ddpm.DDPMObjective.from_args(args).num_clusters == 20
