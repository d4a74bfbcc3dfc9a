"""A classifier-free guidance sweep: one row per guidance scale (FD, IS, class accuracy) as a table and a plot."""

from __future__ import annotations

from pathlib import Path


def guidance_table(results: list[dict]) -> str:
    """Markdown: one row per guidance scale, the quality/diversity trade-off and the accuracy per class."""
    has_dinov2 = "fd_dinov2" in results[0]
    num_classes = len(results[0].get("class_accuracy_per_class", []))
    header = ["w", "digit FD", "digit IS", "class accuracy"] + (["FD-DINOv2"] if has_dinov2 else []) + [str(k) for k in range(num_classes)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        row = [f"{result['guidance_scale']:g}", f"{result['digit_fd']:.1f}", f"{result['digit_is']:.2f}", f"{result['class_accuracy']:.1%}"]
        row += [f"{result['fd_dinov2']:.1f}"] if has_dinov2 else []
        row += ["-" if a is None else f"{a:.0%}" for a in result["class_accuracy_per_class"]]
        lines.append("| " + " | ".join(row) + " |")
    real = results[0]
    lines.append(f"\nN = {real['num_samples']} per row; real-vs-real: digit FD {real['digit_fd_real']:.1f}, digit IS {real['digit_is_real']:.2f}"
                 + (f", FD-DINOv2 {real['fd_dinov2_real']:.1f}" if has_dinov2 else "") + ".")
    return "\n".join(lines)


def plot_guidance_sweep(results: list[dict], path: Path) -> None:
    """Digit FD, digit IS and class accuracy against the guidance scale, real-vs-real values dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = [result["guidance_scale"] for result in results]
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for axis, key, title in zip(axes, ("digit_fd", "digit_is", "class_accuracy"), ("digit FD (lower is better)", "digit IS", "class accuracy")):
        axis.plot(scales, [result[key] for result in results], marker="o")
        if f"{key}_real" in results[0]:
            axis.axhline(results[0][f"{key}_real"], linestyle="--", color="gray", label="real vs real")
            axis.legend()
        axis.set_xlabel("guidance scale w")
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
