"""What a perfect model would score: the digit FD of real MNIST training images, drawn as a generator's samples are.

    python benchmarks/real_data_fd.py --num_samples 1000 --draws 30

Every curve in benchmarks/RESULTS.md reads a model's digit FD against the real-vs-real floor: one draw of N test
images against the N test images the samples are compared with (`evaluate_images(..., seed=0)`, 13.6 at N = 1,000).
A model that had learned the training distribution exactly would not score the floor: its N samples are a random
draw of training-like images, whose class shares vary from draw to draw, and the training split is not the test
split. This script scores such draws, N training images each, against the same compared test images:

- "iid": N images drawn at random, as an unconditional generator's samples are (each image's class drawn by the
  class shares);
- "stratified_by_label": each class exactly in proportion to its share of the training split (largest remainders),
  the images of a class drawn at random: what a sampler that draws its classes, or clusters, in proportion does;
- "test_iid": N test images drawn at random from those not compared with, as the floor's stand-in is: how far the
  floor itself, one such draw, moves.

It prints each kind's mean, SD and range over the draws, the mean as a multiple of the floor, and the share of draws
at or below 1.2x and 1.5x the floor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--num_samples", type=int, default=1000, help="N, the images per draw (the curves' N: 1,000).")
    parser.add_argument("--draws", type=int, default=30, help="Draws of N training images per kind.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the draws (the compared test images are always evaluate_images' seed 0).")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of the table.")
    args = parser.parse_args(argv)
    if args.num_samples < 10 or args.draws < 2:
        parser.error(f"--num_samples {args.num_samples} --draws {args.draws}: give N >= 10 and at least 2 draws (an SD needs two).")
    return args


def stratified_counts(labels, num_samples: int):
    """Images per class, each class's share of `labels` times N rounded by largest remainders (they sum to N)."""
    import torch

    expected = torch.bincount(labels).double() * num_samples / len(labels)
    counts = expected.floor().long()
    counts[torch.argsort(expected - counts, descending=True)[: num_samples - int(counts.sum())]] += 1
    return counts


def draw_indices(labels, num_samples: int, stratified: bool, generator):
    import torch

    if not stratified:
        return torch.randperm(len(labels), generator=generator)[:num_samples]
    picks = []
    for label, count in enumerate(stratified_counts(labels, num_samples).tolist()):
        members = (labels == label).nonzero().flatten()
        picks.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return torch.cat(picks)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import torch

    from diffusion_lab.evaluation import evaluate_images
    from diffusion_lab.evaluation.digit_classifier import DigitClassifier
    from diffusion_lab.evaluation.image_evaluation import reference_order
    from diffusion_lab.evaluation.image_sources import load_dataset_images

    classifier = DigitClassifier.from_file()
    train_images, train_labels = load_dataset_images(split="train", label_column="label")
    reference, _ = load_dataset_images(split="test")
    if args.num_samples > len(reference) // 2:
        raise SystemExit(f"error: --num_samples {args.num_samples} is more than half the test split ({len(reference)}): give at most {len(reference) // 2}.")
    held_out = reference[reference_order(len(reference), seed=0)[args.num_samples :]]  # all but the compared images
    draws, floor = {"iid": [], "stratified_by_label": [], "test_iid": []}, None
    for draw in range(args.draws):
        generator = torch.Generator().manual_seed(args.seed + draw)
        for kind in draws:
            if kind == "test_iid":
                images = held_out[torch.randperm(len(held_out), generator=generator)[: args.num_samples]]
            else:
                images = train_images[draw_indices(train_labels, args.num_samples, kind == "stratified_by_label", generator)]
            result = evaluate_images(images, reference, images_range="uint8", reference_range="uint8", classifier=classifier, psnr_ssim=False, seed=0)
            draws[kind].append(result["digit_fd"])
            floor = result["digit_fd_real"]
        print(f"draw {draw + 1}/{args.draws}: " + ", ".join(f"{kind} {values[-1]:.1f}" for kind, values in draws.items()), file=sys.stderr, flush=True)
    rows = {}
    for kind, values in draws.items():
        mean = statistics.fmean(values)
        rows[kind] = {"mean": mean, "sd": statistics.stdev(values), "min": min(values), "max": max(values), "ratio": mean / floor,
                      "share_within_1_2x": sum(value <= 1.2 * floor for value in values) / len(values),
                      "share_within_1_5x": sum(value <= 1.5 * floor for value in values) / len(values), "draws": values}
    report = {"num_samples": args.num_samples, "draws": args.draws, "seed": args.seed, "floor": floor, "kinds": rows}
    if args.json:
        print(json.dumps(report))
        return
    print(f"N = {args.num_samples}, {args.draws} draws of N images per kind, against the compared test images; floor {floor:.1f}")
    print(f"{'kind':>20} {'mean':>6} {'SD':>5} {'min':>6} {'max':>6} {'x floor':>8} {'<=1.2x':>7} {'<=1.5x':>7}")
    for kind, row in rows.items():
        print(f"{kind:>20} {row['mean']:6.1f} {row['sd']:5.1f} {row['min']:6.1f} {row['max']:6.1f} {row['ratio']:8.2f} "
              f"{row['share_within_1_2x']:7.0%} {row['share_within_1_5x']:7.0%}")


if __name__ == "__main__":
    main()
