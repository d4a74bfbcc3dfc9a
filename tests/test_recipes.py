"""train_ddpm.py's defaults follow the device (training/recipes.py); flags given on the command line win."""

import pytest
from helpers import TINY_RUN

from diffusion_lab.commands.train_ddpm import parse_args, run_training
from diffusion_lab.run_files import read_training_args
from diffusion_lab.training.ddpm_objective import DDPMObjective
from diffusion_lab.training.recipes import CPU_RECIPE, CUDA_RECIPE, apply_recipe, describe_recipe, recipe_clusters


@pytest.mark.parametrize("cuda, recipe", [(False, CPU_RECIPE), (True, CUDA_RECIPE)])
def test_the_default_command_takes_the_recipe_of_its_device(monkeypatch, cuda, recipe):
    monkeypatch.setattr("diffusion_lab.commands.train_ddpm.training_device_is_cuda", lambda: cuda)
    args = parse_args([])
    assert (args.train_batch_size, args.learning_rate, args.num_epochs, args.save_images_epochs, args.save_model_epochs, args.snr_gamma, args.checkpointing_steps) == (
        recipe.train_batch_size, recipe.learning_rate, recipe.num_epochs, recipe.save_images_epochs, recipe.save_model_epochs, recipe.snr_gamma,
        recipe.checkpointing_steps)
    assert (args.timestep_sampling, args.cluster_conditioning, args.clusters_from_recipe) == (recipe.timestep_sampling, recipe.cluster_conditioning, True)
    assert args.lr_scheduler == recipe.lr_scheduler
    assert args.recipe == ("cuda" if cuda else "cpu")


def test_the_cpu_recipe_weights_the_loss_by_min_snr_except_where_the_schedule_has_no_snr(monkeypatch):
    monkeypatch.setattr("diffusion_lab.commands.train_ddpm.training_device_is_cuda", lambda: False)
    assert DDPMObjective.from_args(parse_args([])).snr_gamma == CPU_RECIPE.snr_gamma == 5
    assert DDPMObjective.from_args(parse_args(["--snr_gamma", "0"])).snr_gamma is None  # 0: the plain loss
    des = parse_args(["--noise_schedule", "entropy_scaled"])  # its noise depends on the image: the recipe leaves it plain
    assert des.snr_gamma == 0 and DDPMObjective.from_args(des).snr_gamma is None


def test_flags_given_win_over_the_recipe():
    args = parse_args(["--train_batch_size", "64", "--learning_rate", "5e-4"])
    apply_recipe(args, cuda=True)  # a second application changes nothing that is set
    assert (args.train_batch_size, args.learning_rate) == (64, 5e-4)
    assert args.num_epochs in (CPU_RECIPE.num_epochs, CUDA_RECIPE.num_epochs)



def test_the_first_line_names_the_recipe_and_leaves_out_epochs_that_max_train_steps_overrides(monkeypatch):
    monkeypatch.setattr("diffusion_lab.commands.train_ddpm.training_device_is_cuda", lambda: False)
    assert describe_recipe(parse_args([])) == (
        "the cpu recipe's learning rate 0.002 on a cosine schedule, min-SNR-5 loss weighting, logit-normal timesteps, 100 k-means clusters, "
        "autoguidance w 1.5 by the EMA from 33% of the steps and 8 epochs (flags given win)")
    assert describe_recipe(parse_args(["--max_train_steps", "50", "--snr_gamma", "0", "--autoguidance_scale", "1", "--timestep_sampling", "uniform",
                                       "--cluster_conditioning", "0", "--lr_scheduler", "constant_with_warmup"])) == "the cpu recipe's learning rate 0.002 (flags given win)"


def test_the_cpu_recipe_leaves_clusters_out_for_labels_and_entropy_scaled_noise(monkeypatch):
    """Labels and DES's own pipeline take the place of the clusters (no refusal of the recipe's own K); DES also keeps
    uniform timesteps, the labelled model the recipe's logit-normal ones."""
    monkeypatch.setattr("diffusion_lab.commands.train_ddpm.training_device_is_cuda", lambda: False)
    labelled, des = parse_args(["--class_conditional"]), parse_args(["--noise_schedule", "entropy_scaled"])
    assert (labelled.cluster_conditioning, labelled.timestep_sampling) == (0, "logit_normal")
    assert (des.cluster_conditioning, des.timestep_sampling) == (0, "uniform")
    assert DDPMObjective.from_args(labelled).num_clusters == DDPMObjective.from_args(des).num_clusters == 0
    assert parse_args(["--cluster_conditioning", "3"]).clusters_from_recipe is False  # a K given is the run's


@pytest.mark.parametrize("k, images, clusters", [(100, 60_000, 100), (100, 49_999, 99), (100, 1_000, 2), (100, 499, 0), (0, 60_000, 0)])
def test_the_recipe_gives_a_dataset_at_most_one_cluster_per_500_images(k, images, clusters):
    assert recipe_clusters(k, images) == clusters


@pytest.mark.parametrize("images, clusters", [(1_000, 2), (256, 0)])
def test_a_default_run_on_a_small_dataset_conditions_on_fewer_clusters_and_records_them(tmp_path, monkeypatch, images, clusters):
    monkeypatch.setattr("diffusion_lab.commands.train_ddpm.training_device_is_cuda", lambda: False)
    args = parse_args(["--output_dir", str(tmp_path), *TINY_RUN, "--max_train_samples", str(images), "--max_train_steps", "1",
                       "--autoguidance_scale", "1"])
    trainer = run_training(args, DDPMObjective.from_args(args), argv=["x.py"])
    assert trainer.objective.num_clusters == clusters and trainer.train_data.num_classes == (clusters or None)
    assert read_training_args(tmp_path)["args"]["cluster_conditioning"] == clusters
