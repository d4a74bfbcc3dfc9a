"""Cluster-conditional training: each training image's k-means cluster (`data.clusters`) is its class label.

The clusters are found once, when a run starts, from its --seed. A resumed run takes the centroids its checkpoint
kept (`objective.safetensors`) and puts each image in the nearest, so it goes on with the clusters it began with,
also on another machine, where k-means could end a few boundary images differently.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from ..data.clusters import cluster_sizes, kmeans, nearest_centroids, pixel_vectors
from ..data.image_cache import ImageCache
from .checkpoints import OBJECTIVE_STATE_FILE


def saved_centroids(checkpoint: Path | None, k: int) -> torch.Tensor | None:
    """The centroids a checkpoint of a cluster-conditional run kept; None without a checkpoint. A checkpoint of a
    run with other clusters is refused."""
    if checkpoint is None:
        return None
    path = Path(checkpoint) / OBJECTIVE_STATE_FILE
    centroids = load_file(path).get("cluster_centroids") if path.is_file() else None
    if centroids is None or len(centroids) != k:
        found = "no clusters" if centroids is None else f"{len(centroids)} clusters"
        raise ValueError(f"{checkpoint} holds {found}, this run asks for --cluster_conditioning {k}: resume with the run's own flags.")
    return centroids


def label_by_clusters(train: ImageCache, validation: ImageCache, k: int, seed: int,
                      checkpoint: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Give every image of `train` and `validation` its cluster as its label (`k` classes); returns the centroids
    (k, D) and each cluster's share of the training images (k,)."""
    pixels = pixel_vectors(train.images)
    centroids = saved_centroids(checkpoint, k)
    if centroids is None:
        centroids, assignments = kmeans(pixels, k, seed)
    else:
        assignments = nearest_centroids(pixels, centroids)
    names = [str(index) for index in range(k)]
    for cache, labels in ((train, assignments), (validation, nearest_centroids(pixel_vectors(validation.images), centroids))):
        cache.labels, cache.num_classes, cache.class_names = labels.numpy(), k, names
    return centroids, cluster_sizes(assignments, k)
