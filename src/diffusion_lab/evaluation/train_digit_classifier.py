"""Train the shipped digit classifier: `python -m diffusion_lab.evaluation.train_digit_classifier`.

Deterministic on CPU: a fixed seed, a seeded shuffle, deterministic kernels and a fixed thread count give
the same weights on every run of the same environment. The defaults (4 epochs, batch 128, Adam 2e-3 with
cosine decay) reach >= 99% test accuracy on the shipped MNIST in a few CPU minutes.
"""

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .digit_classifier import SHIPPED_WEIGHTS, DigitClassifier
from .image_sources import load_dataset_images


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the classifier's input range."""
    return images.float() / 127.5 - 1


def train_digit_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_epochs: int = 4,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
) -> DigitClassifier:
    """Train a `DigitClassifier` with Adam and cross-entropy on uint8 (N, 1, 28, 28) images."""
    torch.manual_seed(seed)
    classifier = DigitClassifier()
    optimizer = torch.optim.Adam(classifier.parameters(), lr=learning_rate)
    steps_per_epoch = -(-len(images) // batch_size)
    # Cosine decay to zero: the last, small steps settle the weights.
    lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=num_epochs * steps_per_epoch)
    shuffle_generator = torch.Generator().manual_seed(seed)
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for _ in range(num_epochs):
            for batch in torch.randperm(len(images), generator=shuffle_generator).split(batch_size):
                loss = F.cross_entropy(classifier(to_model_range(images[batch])), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                lr_schedule.step()
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
    return classifier.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(classifier: DigitClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    correct = sum(
        (classifier(to_model_range(image_batch)).argmax(dim=1) == label_batch).sum().item()
        for image_batch, label_batch in zip(images.split(batch_size), labels.split(batch_size))
    )
    return correct / len(images)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None, help="dataset folder or Hub id (default: the shipped MNIST)")
    parser.add_argument("--output", type=Path, default=SHIPPED_WEIGHTS, help="weights file (.safetensors)")
    parser.add_argument("--num_epochs", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_threads", type=int, default=1, help="CPU threads; keep it fixed to reproduce weights")
    args = parser.parse_args(argv)
    if args.num_epochs < 1 or args.batch_size < 1 or args.learning_rate <= 0 or args.num_threads < 1:
        parser.error("--num_epochs, --batch_size, --num_threads must be >= 1 and --learning_rate > 0.")
    return args


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
            "command": "python -m diffusion_lab.evaluation.train_digit_classifier",
            "dataset": args.dataset or "shipped MNIST (data/mnist)",
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


if __name__ == "__main__":
    main()
