"""Train the shipped digit classifier behind the MNIST metrics: `diffusion-lab train-digit-classifier`.

Deterministic on CPU: the same weights on every run of the same environment (see
diffusion_lab.evaluation.train_digit_classifier).
"""

from __future__ import annotations

import argparse
import time

import torch

from ..argument_types import CommandParser, dataset_path, path, positive_float, positive_int, seed
from ..evaluation.digit_classifier import SHIPPED_WEIGHTS
from ..evaluation.image_sources import load_dataset_images
from ..evaluation.train_digit_classifier import accuracy, train_digit_classifier


def parse_args(argv=None) -> argparse.Namespace:
    parser = CommandParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=dataset_path, default=None, help="dataset folder or Hub id (default: the shipped MNIST)")
    parser.add_argument("--output", type=path, default=SHIPPED_WEIGHTS, help="weights file (.safetensors)")
    parser.add_argument("--num_epochs", type=positive_int, default=4)
    parser.add_argument("--batch_size", type=positive_int, default=128)
    parser.add_argument("--learning_rate", type=positive_float, default=2e-3)
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--num_threads", type=positive_int, default=1, help="CPU threads; keep it fixed to reproduce weights")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.num_threads)
    train_images, train_labels = load_dataset_images(args.dataset, split="train", label_column="label")
    test_images, test_labels = load_dataset_images(args.dataset, split="test", label_column="label")
    start, start_cpu = time.perf_counter(), time.process_time()
    classifier = train_digit_classifier(
        train_images, train_labels, args.num_epochs, args.batch_size, args.learning_rate, args.seed
    )
    train_seconds, train_cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    test_accuracy = accuracy(classifier, test_images, test_labels)
    classifier.save(
        args.output,
        {
            "command": "diffusion-lab train-digit-classifier",
            "dataset": args.dataset or "shipped MNIST",
            "num_epochs": args.num_epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "seed": args.seed,
            "num_threads": args.num_threads,
            "torch_version": torch.__version__,
            "train_seconds": round(train_seconds, 1),
            "train_cpu_seconds": round(train_cpu_seconds, 1),
            "test_accuracy": test_accuracy,
        },
    )
    print(
        f"test accuracy {test_accuracy:.4f} after {train_seconds:.0f} s of training "
        f"({train_cpu_seconds:.0f} s CPU); saved {args.output}"
    )

