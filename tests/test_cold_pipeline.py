"""ColdDiffusionPipeline: Algorithms 1 and 2, conditional and unconditional sampling, the fitted start
distribution, and saving / loading with and without remote code."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, ModelMixin
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.unets.unet_2d import UNet2DOutput
from PIL import Image
from safetensors.torch import load_file

from diffusion_lab import CourseworkCNN
from diffusion_lab.data import SHIPPED_MNIST
from diffusion_lab.degradations import (
    GaussianBlur,
    GrowingMask,
    Pixelation,
    RowColumnAveraging,
)
from diffusion_lab.pipelines import ColdDiffusionPipeline, GaussianMixture
from diffusion_lab.pipelines.export import load_pipeline, save_pipeline

MNIST_TEST = SHIPPED_MNIST / "test-00000-of-00001.parquet"


def mnist_images(count: int) -> torch.Tensor:
    """The first `count` MNIST test digits, (count, 1, 28, 28) in [-1, 1]."""
    rows = pq.read_table(MNIST_TEST).slice(0, count).column("image").to_pylist()
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(row["bytes"]))) for row in rows])
    return torch.from_numpy(pixels).float().div(127.5).sub(1).unsqueeze(1)


class OracleRestorer(ModelMixin, ConfigMixin):
    """R(x_t, t) = the true x0 plus `bias`; records every (input, level) it is called with."""

    def __init__(self, clean: torch.Tensor, bias: float = 0.0):
        super().__init__()
        self.clean, self.bias, self.calls = clean, bias, []
        self.register_to_config(in_channels=clean.shape[1], sample_size=clean.shape[-1])
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a device and dtype

    def forward(self, sample, timestep):
        self.calls.append((sample.clone(), timestep.clone()))
        return UNet2DOutput(sample=self.clean + self.bias)


def tiny_cnn(num_levels: int) -> CourseworkCNN:
    torch.manual_seed(0)
    return CourseworkCNN(hidden_channels=(4, 4, 4, 4), time_mlp_width=8, num_train_timesteps=num_levels)


@pytest.fixture(scope="module")
def digits():
    return mnist_images(1000)


@pytest.fixture(scope="module")
def rows_pipeline(digits):
    degradation = RowColumnAveraging(group_size=4)
    statistics = degradation.start_statistics(degradation.degrade(digits, degradation.num_levels))
    mixture = GaussianMixture.fit(statistics, num_components=4, num_iterations=20, generator=torch.Generator().manual_seed(0))
    pipeline = ColdDiffusionPipeline(unet=tiny_cnn(degradation.num_levels), degradation=degradation, start_distribution=mixture)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.mark.parametrize("algorithm", [1, 2])
def test_an_oracle_restorer_walks_through_every_level_and_recovers_x(digits, algorithm):
    degradation = RowColumnAveraging(order="outside_in")
    clean = digits[:4]
    oracle = OracleRestorer(clean)
    pipeline = ColdDiffusionPipeline(unet=oracle, degradation=degradation)
    pipeline.set_progress_bar_config(disable=True)
    output = pipeline(images=clean, algorithm=algorithm, output_type="pt")
    assert [int(t[0]) for _, t in oracle.calls] == list(range(28, 0, -1))  # never called at t = 0
    for sample, timesteps in oracle.calls:
        torch.testing.assert_close(sample, degradation.degrade(clean, int(timesteps[0])), atol=1e-6, rtol=0)
    torch.testing.assert_close(output.images, clean / 2 + 0.5)
    torch.testing.assert_close(output.degraded, degradation.degrade(clean, 28) / 2 + 0.5)


def test_algorithm_2_cancels_a_constant_restoration_error_that_algorithm_1_keeps(digits):
    """With R = x0 + c, D(R, s) - D(R, s-1) = D(x0, s) - D(x0, s-1) for averaging, so Algorithm 2 still
    visits D(x0, s) exactly (the paper's argument for it) while Algorithm 1 visits D(x0, s) + c."""
    degradation = RowColumnAveraging(group_size=4)
    clean = digits[:3]
    for algorithm, offset in ((2, 0.0), (1, 0.1)):
        oracle = OracleRestorer(clean, bias=0.1)
        pipeline = ColdDiffusionPipeline(unet=oracle, degradation=degradation)
        pipeline.set_progress_bar_config(disable=True)
        pipeline(images=clean, algorithm=algorithm, output_type="pt")
        for sample, timesteps in oracle.calls[1:]:
            torch.testing.assert_close(sample, degradation.degrade(clean, int(timesteps[0])) + offset, atol=1e-6, rtol=0)


def test_fewer_inference_steps_skip_levels_and_still_recover_x_with_an_oracle(digits):
    degradation = RowColumnAveraging()
    oracle = OracleRestorer(digits[:2])
    pipeline = ColdDiffusionPipeline(unet=oracle, degradation=degradation)
    pipeline.set_progress_bar_config(disable=True)
    output = pipeline(images=digits[:2], num_inference_steps=4, output_type="pt")
    assert [int(t[0]) for _, t in oracle.calls] == [28, 21, 14, 7]
    torch.testing.assert_close(output.images, digits[:2] / 2 + 0.5)


def papers_sampler(restorer, degradation, x0, algorithm, levels):
    """Bansal et al.'s Algorithms 1 and 2 written out: x_T = D(x0, T); for s = T..1: x̂0 = R(x_s, s),
    Algorithm 1: x_{s-1} = D(x̂0, s-1); Algorithm 2: x_{s-1} = x_s - D(x̂0, s) + D(x̂0, s-1); D(x, 0) = x; return x_0.
    `levels` T = l_0 > l_1 > ... > 0 are the levels visited (all of them: T, T-1, ..., 0)."""
    D = lambda x, s: x if s == 0 else degradation.degrade(x, s)  # noqa: E731
    x = D(x0, levels[0])
    with torch.no_grad():
        for s, s_next in zip(levels[:-1], levels[1:]):
            x_hat = restorer(x, torch.full((len(x),), s)).sample
            x = D(x_hat, s_next) if algorithm == 1 else x - D(x_hat, s) + D(x_hat, s_next)
    return x


@pytest.mark.parametrize("algorithm", [1, 2])
@pytest.mark.parametrize("degradation", [
    RowColumnAveraging(), RowColumnAveraging(orientation="columns", group_size=4, order="outside_in"),
    RowColumnAveraging(group_size=4, group_mode="separate"), GaussianBlur(num_levels=5), Pixelation(), GrowingMask(rings_per_level=4),
], ids=["rows", "column_bands", "rows_separate", "blur", "pixelate", "mask"])
def test_the_pipeline_is_the_papers_algorithm(digits, degradation, algorithm):
    restorer = tiny_cnn(degradation.num_levels)  # an untrained R: far from x0, so every term of the update matters
    pipeline = ColdDiffusionPipeline(unet=restorer, degradation=degradation)
    pipeline.set_progress_bar_config(disable=True)
    clean = digits[:3]
    output = pipeline(images=clean, algorithm=algorithm, output_type="pt")
    expected = papers_sampler(restorer, degradation, clean, algorithm, list(range(degradation.num_levels, -1, -1)))
    torch.testing.assert_close(output.images, (expected / 2 + 0.5).clamp(0, 1), atol=1e-6, rtol=0)


def test_algorithm_2_ends_with_x1_minus_d_of_x0_hat_at_1_plus_x0_hat(digits):
    """The last step of Algorithm 2 is x_0 = x_1 - D(x̂0, 1) + x̂0, not x̂0 (what the pipeline returned before)."""
    degradation = RowColumnAveraging(group_size=4)
    restorer = tiny_cnn(degradation.num_levels)
    pipeline = ColdDiffusionPipeline(unet=restorer, degradation=degradation)
    pipeline.set_progress_bar_config(disable=True)
    output = pipeline(images=digits[:3], algorithm=2, num_inference_steps=2, output_type="pt")  # levels 7, 4 (rounded 3.5), 0
    levels = [7, 4, 0]
    expected = papers_sampler(restorer, degradation, digits[:3], 2, levels)
    torch.testing.assert_close(output.images, (expected / 2 + 0.5).clamp(0, 1), atol=1e-6, rtol=0)
    x_hat_last = (output.images - 0.5) * 2  # not the last prediction alone
    with torch.no_grad():
        x1 = papers_sampler(restorer, degradation, digits[:3], 2, levels[:-1])  # x at level 4
        prediction = restorer(x1, torch.full((3,), 4)).sample
    assert (x_hat_last - prediction.clamp(-1, 1)).abs().max() > 0.05


def test_conditional_sampling_returns_the_four_columns(rows_pipeline, digits):
    clean = digits[:5]
    output = rows_pipeline(images=clean, output_type="pt")
    degradation, unet = rows_pipeline.degradation, rows_pipeline.unet
    degraded = degradation.degrade(clean, degradation.num_levels)
    torch.testing.assert_close(output.originals, clean / 2 + 0.5)
    torch.testing.assert_close(output.degraded, degraded / 2 + 0.5)
    with torch.no_grad():
        direct = unet(degraded, torch.full((5,), degradation.num_levels)).sample
    torch.testing.assert_close(output.direct, (direct / 2 + 0.5).clamp(0, 1))
    assert not torch.allclose(output.images, output.direct)


def test_unconditional_sampling_starts_from_the_fitted_distribution(rows_pipeline):
    first = rows_pipeline(batch_size=6, generator=torch.Generator().manual_seed(3), output_type="pt")
    again = rows_pipeline(batch_size=6, generator=torch.Generator().manual_seed(3), output_type="pt")
    other = rows_pipeline(batch_size=6, generator=torch.Generator().manual_seed(4), output_type="pt")
    assert first.originals is None
    assert torch.equal(first.images, again.images) and not torch.equal(first.images, other.images)
    assert first.degraded.std(dim=-1).max() < 1e-6  # a fully row-averaged image: constant rows
    noisy = rows_pipeline(batch_size=6, generator=torch.Generator().manual_seed(3), noise=0.05, output_type="pt")
    assert noisy.degraded.std(dim=-1).max() > 0.01 and not torch.equal(noisy.images, first.images)
    pil = rows_pipeline(batch_size=2, output_type="pil")
    assert len(pil.images) == 2 and pil.images[0].size == (28, 28)
    assert rows_pipeline(batch_size=2, output_type="np").images.shape == (2, 28, 28, 1)


def test_bad_calls_give_one_clear_error(rows_pipeline, tmp_path):
    with pytest.raises(ValueError, match="algorithm"):
        rows_pipeline(batch_size=1, algorithm=3)
    with pytest.raises(ValueError, match="num_inference_steps"):
        rows_pipeline(batch_size=1, num_inference_steps=0)
    save_pipeline(ColdDiffusionPipeline(unet=rows_pipeline.unet, degradation=rows_pipeline.degradation), tmp_path / "restorer")
    for without_start in (ColdDiffusionPipeline.from_pretrained(tmp_path / "restorer"), load_pipeline(tmp_path / "restorer")):
        assert without_start.start_distribution is None
        with pytest.raises(ValueError, match="start_distribution"):
            without_start(batch_size=1)
    with pytest.raises(ValueError, match="N >= num_components"):
        GaussianMixture.fit(torch.zeros(3, 2), num_components=4)


def test_em_recovers_a_known_mixture():
    generator = torch.Generator().manual_seed(0)
    which = torch.rand(20000, generator=generator) < 0.3
    features = torch.where(which[:, None], torch.tensor([-2.0, 1.0]), torch.tensor([1.0, -1.0]))
    features = features + torch.where(which[:, None], torch.tensor([0.3, 0.5]), torch.tensor([0.6, 0.2])) * torch.randn(20000, 2, generator=generator)
    mixture = GaussianMixture.fit(features, num_components=2, num_iterations=30, generator=generator)
    first = mixture.means[:, 0].argmin()
    torch.testing.assert_close(mixture.weights[first], torch.tensor(0.3), atol=0.01, rtol=0)
    torch.testing.assert_close(mixture.means[first], torch.tensor([-2.0, 1.0]), atol=0.02, rtol=0)
    stds = mixture.scale_trils.diagonal(dim1=-2, dim2=-1)  # the covariances are diagonal here
    torch.testing.assert_close(stds[first], torch.tensor([0.3, 0.5]), atol=0.02, rtol=0)
    torch.testing.assert_close(stds[1 - first], torch.tensor([0.6, 0.2]), atol=0.02, rtol=0)
    torch.testing.assert_close(mixture.scale_trils[:, 1, 0], torch.zeros(2), atol=0.02, rtol=0)


@pytest.mark.parametrize("degradation", [RowColumnAveraging(orientation="columns"), Pixelation()], ids=["columns", "pixelate"])
def test_fitted_start_distribution_reproduces_real_fully_degraded_digits(digits, degradation):
    statistics = degradation.start_statistics(degradation.degrade(digits, degradation.num_levels))
    mixture = GaussianMixture.fit(statistics, num_components=10, generator=torch.Generator().manual_seed(0))
    drawn = mixture.sample(20000, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(drawn.mean(0), statistics.mean(0), atol=0.01, rtol=0)
    torch.testing.assert_close(drawn.std(0), statistics.std(0), atol=0.01, rtol=0)
    # The mixture also carries the correlations between rows (columns) that independent ranges would lose.
    covariance_error = (drawn.T.cov() - statistics.T.cov()).norm() / statistics.T.cov().norm()
    assert covariance_error < 0.05


def test_save_and_load_round_trip_without_remote_code(rows_pipeline, tmp_path):
    save_pipeline(rows_pipeline, tmp_path / "cold")
    index = json.loads((tmp_path / "cold" / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_cold_diffusion", "ColdDiffusionPipeline"]
    assert index["degradation"] == ["row_column_averaging", "RowColumnAveraging"]
    assert (tmp_path / "cold" / "degradation" / "degradation.py").is_file()  # the relative import travels too
    loaded = ColdDiffusionPipeline.from_pretrained(tmp_path / "cold")
    assert type(loaded.unet) is CourseworkCNN and type(loaded.degradation) is RowColumnAveraging
    assert type(load_pipeline(tmp_path / "cold").start_distribution) is GaussianMixture
    for name in ("unet", "start_distribution"):
        saved, restored = getattr(rows_pipeline, name).state_dict(), getattr(loaded, name).state_dict()
        assert saved.keys() == restored.keys() and all(torch.equal(saved[k], restored[k]) for k in saved)
    assert loaded.degradation.averaging_order == rows_pipeline.degradation.averaging_order
    double = ColdDiffusionPipeline.from_pretrained(tmp_path / "cold", torch_dtype=torch.float64)
    assert double.unet.dtype == torch.float64 and double.start_distribution.dtype == torch.float64
    with pytest.raises(TypeError, match="takes only torch_dtype, not variant"):
        ColdDiffusionPipeline.from_pretrained(tmp_path / "cold", variant="fp16")
    loaded.set_progress_bar_config(disable=True)
    generator = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    assert torch.equal(
        loaded(batch_size=4, generator=generator(), output_type="pt").images,
        rows_pipeline(batch_size=4, generator=generator(), output_type="pt").images,
    )


REMOTE_LOAD = """
import sys, torch
from diffusers import DiffusionPipeline
from safetensors.torch import save_file
pipeline = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)
pipeline.set_progress_bar_config(disable=True)
assert "diffusion_lab" not in sys.modules, "remote code imported diffusion_lab"
assert type(pipeline).__module__.startswith("diffusers_modules"), type(pipeline)
output = pipeline(batch_size=4, generator=torch.Generator().manual_seed(7), output_type="pt")
save_file({"images": output.images, "degraded": output.degraded}, sys.argv[2])

# The remote class without remote code needs diffusion_lab: without it, one line saying so.
sys.modules["diffusion_lab"] = None
try:
    type(pipeline).from_pretrained(sys.argv[1])
    raise AssertionError("loaded without diffusion_lab")
except ModuleNotFoundError as error:
    message = str(error)
    assert "pip install diffusion-lab" in message and "trust_remote_code=True" in message and "\\n" not in message, message
del sys.modules["diffusion_lab"]

# Then, in the same process, diffusion_lab's own classes: nothing from the folder runs.
from diffusion_lab.pipelines import ColdDiffusionPipeline
for local in (ColdDiffusionPipeline.from_pretrained(sys.argv[1]), type(pipeline).from_pretrained(sys.argv[1])):
    assert type(local) is ColdDiffusionPipeline, type(local)
    assert all(type(c).__module__.startswith("diffusion_lab.") for c in local.components.values()), local.components
"""


def test_remote_code_load_needs_only_diffusers(rows_pipeline, tmp_path):
    folder = tmp_path / "cold"
    save_pipeline(ColdDiffusionPipeline(rows_pipeline.unet, GaussianBlur(), None), folder)  # replaced below, as a whole
    save_pipeline(rows_pipeline, folder)
    assert not (folder / "degradation" / "gaussian_blur.py").exists()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_LOAD, str(folder), str(tmp_path / "remote.safetensors")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = load_file(tmp_path / "remote.safetensors")
    local = rows_pipeline(batch_size=4, generator=torch.Generator().manual_seed(7), output_type="pt")
    assert torch.equal(remote["images"], local.images)
    assert torch.equal(remote["degraded"], local.degraded)


def test_export_keeps_stock_components_of_a_ddpm_pipeline(tmp_path):
    pipeline = DDPMPipeline(unet=tiny_cnn(1000), scheduler=DDPMScheduler(num_train_timesteps=1000))
    save_pipeline(pipeline, tmp_path / "ddpm")
    index = json.loads((tmp_path / "ddpm" / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline" and index["scheduler"] == ["diffusers", "DDPMScheduler"]
    assert index["unet"] == ["coursework_cnn", "CourseworkCNN"] and (tmp_path / "ddpm" / "unet" / "coursework_cnn.py").is_file()
    loaded = load_pipeline(tmp_path / "ddpm")
    assert type(loaded) is DDPMPipeline and type(loaded.unet) is CourseworkCNN
    assert all(torch.equal(a, b) for a, b in zip(pipeline.unet.state_dict().values(), loaded.unet.state_dict().values()))
    with pytest.raises(ValueError, match="holds a DDPMPipeline, not a ColdDiffusionPipeline"):
        ColdDiffusionPipeline.from_pretrained(tmp_path / "ddpm")
