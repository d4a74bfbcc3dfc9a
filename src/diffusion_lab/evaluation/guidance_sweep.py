"""A guidance sweep (classifier-free guidance or autoguidance): one row per guidance scale (FD, IS, class accuracy
where the images have intended classes) as a table and a plot."""

from __future__ import annotations

from pathlib import Path


def guidance_table(results: list[dict]) -> str:
    """Markdown: one row per guidance scale, the quality/diversity trade-off and the accuracy per class."""
    has_dinov2 = "fd_dinov2" in results[0]
    has_classes = "class_accuracy" in results[0]  # an autoguided (unconditional) pipeline's sweep has no intended classes
    num_classes = len(results[0].get("class_accuracy_per_class", []))
    header = (["w", "digit FD", "digit IS"] + (["class accuracy"] if has_classes else []) + (["FD-DINOv2"] if has_dinov2 else [])
              + [str(k) for k in range(num_classes)])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        row = [f"{result['guidance_scale']:g}", f"{result['digit_fd']:.1f}", f"{result['digit_is']:.2f}"]
        row += [f"{result['class_accuracy']:.1%}"] if has_classes else []
        row += [f"{result['fd_dinov2']:.1f}"] if has_dinov2 else []
        row += ["-" if a is None else f"{a:.0%}" for a in result.get("class_accuracy_per_class", [])]
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
    panels = [("digit_fd", "digit FD (lower is better)"), ("digit_is", "digit IS"), ("class_accuracy", "class accuracy")]
    panels = [(key, title) for key, title in panels if key in results[0]]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.7 * len(panels), 3.2))
    for axis, (key, title) in zip(axes, panels):
        axis.plot(scales, [result[key] for result in results], marker="o")
        if f"{key}_real" in results[0]:
            axis.axhline(results[0][f"{key}_real"], linestyle="--", color="gray", label="real vs real")
            axis.legend()
        axis.set_xlabel("guidance scale w")
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
