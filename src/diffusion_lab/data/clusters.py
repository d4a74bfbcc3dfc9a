"""Classes without labels: k-means clusters of the training images' pixels, for cluster-conditional training.

A conditional diffusion model learns faster than an unconditional one because its labels split the data into
simpler parts; clusters of the images split it without labels, and a model conditioned on them, sampled with each
image's cluster drawn by the clusters' sizes, is again an unconditional generator (Bao et al. 2022, "Why are
conditional generative models better than unconditional ones?"; Adaloglou et al. 2024). On MNIST's pixels 20
clusters take 70 % of the images of a digit together, 100 clusters 88 % (benchmarks/RESULTS.md, section 21).
"""

from __future__ import annotations

import numpy as np
import torch

CHUNK = 8192  # points per distance computation: 8,192 x K distances at a time, not N x K
# k-means is fitted on at most this many images (a seeded random subset), then every image goes to its nearest
# centroid: on MNIST 100 clusters then take seconds on a 2-core CPU, not the minutes of all 60,000.
FIT_POINTS = 10_000


def nearest_centroids(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The index of the nearest centroid (Euclidean) of each point, (N,) int64; ties go to the lower index."""
    return torch.cat([torch.cdist(chunk, centroids).argmin(dim=1) for chunk in points.split(CHUNK)])


def kmeans_plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k initial centroids (Arthur & Vassilvitskii 2007): the first a random point, each next one a point drawn with
    probability proportional to its squared distance to the nearest centroid chosen so far."""
    centroids = [points[torch.randint(len(points), (1,), generator=generator)].squeeze(0)]
    squared = torch.cdist(points, centroids[0][None]).squeeze(1).square()
    for _ in range(k - 1):
        chosen = points[torch.multinomial(squared, 1, generator=generator)].squeeze(0)
        centroids.append(chosen)
        squared = torch.minimum(squared, torch.cdist(points, chosen[None]).squeeze(1).square())
    return torch.stack(centroids)


def kmeans(points: torch.Tensor, k: int, seed: int, max_iterations: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means from a seeded k-means++ start, until no point changes cluster (or `max_iterations`), fitted on
    a seeded random subset of at most FIT_POINTS points; then each point goes to its nearest centroid.

    `points` (N, D) float; returns the centroids (k, D) and each point's cluster (N,). A cluster left empty keeps
    its centroid. The same points and seed give the same clusters."""
    if not 1 <= k <= min(len(points), FIT_POINTS):
        raise ValueError(f"k-means needs 1 to {min(len(points), FIT_POINTS)} clusters for {len(points)} images, not {k}.")
    points = points.float()
    generator = torch.Generator().manual_seed(seed)
    fit = points if len(points) <= FIT_POINTS else points[torch.randperm(len(points), generator=generator)[:FIT_POINTS]]
    centroids = kmeans_plus_plus(fit, k, generator)
    assignments = nearest_centroids(fit, centroids)
    for _ in range(max_iterations):
        sums = torch.zeros_like(centroids).index_add_(0, assignments, fit)
        counts = torch.bincount(assignments, minlength=k)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
        updated = nearest_centroids(fit, centroids)
        if torch.equal(updated, assignments):
            break
        assignments = updated
    return centroids, nearest_centroids(points, centroids)


def pixel_vectors(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images (N, C, H, W) as float vectors in [0, 1], (N, C x H x W), on the CPU."""
    return torch.from_numpy(np.asarray(images, dtype=np.float32)).reshape(len(images), -1).div_(255)  # a copy: caches are read-only maps


def cluster_sizes(assignments: torch.Tensor, k: int) -> torch.Tensor:
    """Each cluster's share of the images, (k,) float64, summing to 1."""
    return torch.bincount(assignments, minlength=k).double() / len(assignments)
