"""train_ddpm.py's defaults follow the device (training/recipes.py); flags given on the command line win."""

import pytest

from diffusion_lab.commands.train_ddpm import parse_args
from diffusion_lab.training.recipes import CPU_RECIPE, CUDA_RECIPE, apply_recipe, describe_recipe


@pytest.mark.parametrize("cuda, recipe", [(False, CPU_RECIPE), (True, CUDA_RECIPE)])
def test_the_default_command_takes_the_recipe_of_its_device(monkeypatch, cuda, recipe):
    monkeypatch.setattr("diffusion_lab.commands.train_ddpm.training_device_is_cuda", lambda: cuda)
    args = parse_args([])
    assert (args.train_batch_size, args.learning_rate, args.num_epochs, args.save_images_epochs, args.save_model_epochs) == (
        recipe.train_batch_size, recipe.learning_rate, recipe.num_epochs, recipe.save_images_epochs, recipe.save_model_epochs)
    assert args.recipe == ("cuda" if cuda else "cpu")


def test_flags_given_win_over_the_recipe():
    args = parse_args(["--train_batch_size", "64", "--learning_rate", "5e-4"])
    apply_recipe(args, cuda=True)  # a second application changes nothing that is set
    assert (args.train_batch_size, args.learning_rate) == (64, 5e-4)
    assert args.num_epochs in (CPU_RECIPE.num_epochs, CUDA_RECIPE.num_epochs)



def test_the_first_line_names_the_recipe_and_leaves_out_epochs_that_max_train_steps_overrides(monkeypatch):
    monkeypatch.setattr("diffusion_lab.commands.train_ddpm.training_device_is_cuda", lambda: False)
    assert describe_recipe(parse_args([])) == "the cpu recipe's learning rate 0.001 and 8 epochs (flags given win)"
    assert describe_recipe(parse_args(["--max_train_steps", "50"])) == "the cpu recipe's learning rate 0.001 (flags given win)"
