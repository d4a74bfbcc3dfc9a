"""Inception-v3 FID and Inception Score as the reference implementations compute them, in plain torch.

The network is the FID Inception-v3 (TensorFlow's 2015-12-05 graph, as converted by pytorch-fid and torch-fidelity):
the same layers and parameter names as torch-fidelity's `FeatureExtractorInceptionV3`, so its weights file
(`weights-inception-2015-12-05-6726825d.pth`, the file torchmetrics' FID downloads into torch hub's cache) loads
as is. It needs neither torchvision nor torch-fidelity. Input handling follows torch-fidelity: uint8 RGB, bilinear
resize to 299x299 as TensorFlow 1.x computes it, then (x - 128) / 128.

- FID: pool features (2048), mean and covariance per set, ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (see
  `frechet_distance` for how the trace is computed).
- IS: softmax of the unbiased logits (1008 classes, no bias), shuffled with a fixed seed (2020) and cut into 10
  splits; exp(E KL(p(y|x) || p(y))) per split; the mean and the standard deviation over splits ("IS ± std").

Layer definitions adapted from torch-fidelity (https://github.com/toshas/torch-fidelity, Apache License 2.0), itself
adapted from pytorch-fid (https://github.com/mseitzer/pytorch-fid, Apache License 2.0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# The weights file torch-fidelity (and so torchmetrics' FID) downloads into torch hub's checkpoints folder.
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INPUT_SIZE = 299
IS_SPLITS = 10
IS_SHUFFLE_SEED = 2020  # torch-fidelity's


class BasicConv2d(nn.Module):
    def __init__(self, in_channels, out_channels, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x):
    # TensorFlow's average pooling leaves the zero padding out of the average.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, in_channels, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x):
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, self.branch_pool(_avg_pool_3x3(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), branch3x3dbl, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, in_channels, channels_7x7):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x):
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, self.branch_pool(_avg_pool_3x3(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([branch3x3, branch7x7x3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """Mixed_7b (`max_pool=False`: average pooling) and Mixed_7c (`max_pool=True`, as in TensorFlow's graph)."""

    def __init__(self, in_channels, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x):
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool_3x3(x)
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)], 1)


def resize_like_tensorflow1x(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of float (N, C, H, W) to size x size as TensorFlow 1.x's resize_bilinear (align_corners=False):
    output pixel i samples the input at i * in / out (no half-pixel offset), clamped at the last pixel."""

    def axis(in_size: int):
        position = torch.arange(size, dtype=torch.float32, device=images.device) * (in_size / size)
        low = position.long()
        return low, (low + 1).clamp_max(in_size - 1), (position - low.float()).to(images.dtype)

    rows_low, rows_high, row_weight = axis(images.shape[2])
    columns_low, columns_high, column_weight = axis(images.shape[3])
    top = images[:, :, rows_low, :]
    bottom = images[:, :, rows_high, :]
    column_weight = column_weight.view(1, 1, 1, size)
    top = top[..., columns_low] + (top[..., columns_high] - top[..., columns_low]) * column_weight
    bottom = bottom[..., columns_low] + (bottom[..., columns_high] - bottom[..., columns_low]) * column_weight
    return top + (bottom - top) * row_weight.view(1, 1, size, 1)


def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1], (N, 1 or 3, H, W) -> uint8 RGB, as the image files a reference implementation reads:
    rounded to 256 levels, a grayscale channel repeated three times."""
    if images.shape[1] not in (1, 3):
        raise ValueError(f"Inception metrics take 1- or 3-channel images; these have {images.shape[1]} channels.")
    images = ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3; `forward(uint8 RGB images)` -> (pool features (N, 2048), unbiased logits (N, 1008))."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.MaxPool_1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.MaxPool_2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.AvgPool = nn.AdaptiveAvgPool2d(output_size=(1, 1))
        self.fc = nn.Linear(2048, 1008)
        self.eval()
        self.requires_grad_(False)

    @classmethod
    def from_file(cls, path: str | Path) -> "FIDInceptionV3":
        """Weights from a `.safetensors` file or torch-fidelity's `.pth` (a plain state dict, read with
        `weights_only=True`: tensors only, no code)."""
        path = Path(path)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # not a torch file, or one holding more than tensors
                raise ValueError(f"Inception weights {path} cannot be read as a state dict ({type(error).__name__}): "
                                 "pass torch-fidelity's weights-inception-2015-12-05-6726825d.pth or a .safetensors copy.") from None
        model = cls()
        # BatchNorm's step counters are not weights; a converted file may leave them out.
        expected = {key for key in model.state_dict() if not key.endswith("num_batches_tracked")}
        if not isinstance(state, dict) or expected - set(state) or set(state) - set(model.state_dict()):
            missing = sorted(expected - set(state)) if isinstance(state, dict) else ["(not a state dict)"]
            raise ValueError(f"{path} is not FID Inception-v3 weights (missing {missing[:3]}...): pass "
                             f"torch-fidelity's {INCEPTION_WEIGHTS_FILE}.")
        try:
            model.load_state_dict(state, strict=False)
        except RuntimeError as error:
            raise ValueError(f"{path} does not fit the FID Inception-v3 ({str(error).splitlines()[-1].strip()}).") from None
        return model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"FIDInceptionV3 takes uint8 RGB images (N, 3, H, W); got {images.dtype} {tuple(images.shape)}.")
        x = resize_like_tensorflow1x(images.float(), INPUT_SIZE)
        x = (x - 128) / 128
        for layer in (self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3, self.MaxPool_1, self.Conv2d_3b_1x1,
                      self.Conv2d_4a_3x3, self.MaxPool_2, self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,
                      self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = layer(x)
        pool = torch.flatten(self.AvgPool(x), 1)
        return pool.float(), (pool @ self.fc.weight.T).float()


@torch.no_grad()
def inception_outputs(network: FIDInceptionV3, images: torch.Tensor, batch_size: int = 64, device: str = "cpu"):
    """Pool features and unbiased logits of images in [-1, 1] (N, 1 or 3, H, W), in float64 on the CPU."""
    network = network.to(device)
    pools, logits = [], []
    for batch in images.split(batch_size):
        pool, logit = network(to_uint8_rgb(batch).to(device))
        pools.append(pool.double().cpu())
        logits.append(logit.double().cpu())
    return torch.cat(pools), torch.cat(logits)


def frechet_distance(features: torch.Tensor, reference_features: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)), in float64.

    Tr((S1 S2)^(1/2)) is torch-fidelity's sum of the square roots of the eigenvalues of S1 S2, except when a set has
    fewer images than features: then S1 = A^T A / (n1 - 1) and S2 = B^T B / (n2 - 1) (A, B the centred features) and
    the same trace is exactly the nuclear norm of A B^T over sqrt((n1 - 1)(n2 - 1)), an n1 x n2 problem instead of
    2048 x 2048 (the non-zero eigenvalues of S1 S2 are the squared singular values of A B^T over (n1 - 1)(n2 - 1)).
    """
    first, second = features.double().numpy(), reference_features.double().numpy()
    mu1, mu2 = first.mean(axis=0), second.mean(axis=0)
    centred1, centred2 = first - mu1, second - mu2
    scale = (len(first) - 1) * (len(second) - 1)
    trace1, trace2 = (centred1**2).sum() / (len(first) - 1), (centred2**2).sum() / (len(second) - 1)
    if min(len(first), len(second)) <= first.shape[1]:
        trace_sqrt = np.linalg.svd(centred1 @ centred2.T, compute_uv=False).sum() / np.sqrt(scale)
    else:
        sigma1, sigma2 = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
        trace_sqrt = np.sqrt(np.linalg.eigvals(sigma1 @ sigma2).astype(np.complex128)).real.sum()
    return float((mu1 - mu2) @ (mu1 - mu2) + trace1 + trace2 - 2 * trace_sqrt)


def inception_score_splits(logits: torch.Tensor, splits: int = IS_SPLITS, seed: int = IS_SHUFFLE_SEED) -> tuple[float, float]:
    """Inception Score mean and standard deviation over `splits` (torch-fidelity's: numpy permutation with `seed`,
    split i = rows [i N / splits, (i + 1) N / splits), population std)."""
    if len(logits) < splits:
        raise ValueError(f"the Inception Score over {splits} splits needs at least {splits} images; got {len(logits)}.")
    logits = logits.double()[np.random.RandomState(seed).permutation(len(logits))]
    probabilities, log_probabilities = logits.softmax(dim=1), logits.log_softmax(dim=1)
    count, scores = len(logits), []
    for index in range(splits):
        rows = slice(index * count // splits, (index + 1) * count // splits)
        p, log_p = probabilities[rows], log_probabilities[rows]
        marginal = p.mean(dim=0, keepdim=True)
        scores.append((p * (log_p - marginal.log())).sum(dim=1).mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))
