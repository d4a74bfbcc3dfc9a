"""Sample quality by sampler, on one trained model: is a fast sampler as good as 1,000 ancestral steps?

    python benchmarks/sampler_quality.py ddpm-mnist --num_samples 1000 --samplers dpmsolver-sde:20 dpmsolver:20 ddim:50 ddpm:1000

Each sampler (a scheduler swap that keeps the trained betas, `diffusion_lab.sampling`) draws N images from the same
seeds; each set is scored with the digit metrics against the MNIST test split, beside the real-vs-real floor at the
same N. The table gives each sampler's digit FD as a ratio to the last sampler's (the reference, by default DDPM
ancestral with every training step), and its images/s. --mixed_precision bf16 (the default on CPUs and GPUs with
native bf16) samples under bf16 autocast, as the trainer's grids do. `--seed 0 1000 2000` draws N images per seed
and reports the mean FD and its standard deviation: one draw of 1,000 is noisy (benchmarks/RESULTS.md, section 11).
A class-conditional pipeline draws N / K images of each of its K classes, with --guidance_scale (default 1, the plain
conditional model), as `diffusion-lab evaluate` does; an autoguided one samples at its own w unless --guidance_scale;
a cluster-conditional one draws its clusters as configured (stratified) unless --cluster_draws.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def parse_args(argv):
    from diffusion_lab.pipelines.pipeline_cluster_conditional import CLUSTER_DRAWS
    from diffusion_lab.sampling import SAMPLERS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("pipeline", help="A saved DDPM pipeline folder (stock DDPMPipeline).")
    parser.add_argument("--samplers", nargs="+", default=["dpmsolver-sde:20", "dpmsolver:20", "ddim:50", "ddpm:1000"],
                        help=f"name:steps, the last one the reference (names: {', '.join(SAMPLERS)}).")
    parser.add_argument("--num_samples", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=250)
    parser.add_argument("--seed", type=int, nargs="+", default=[0],
                        help="Sampling seed; several (e.g. 0 1000 2000): one draw of N images each, the FD their mean "
                             "(one draw of 1,000 moves it by 6-20 %%).")
    parser.add_argument("--guidance_scale", type=float, default=None,
                        help="Class-conditional pipelines: the guidance scale w (default 1: the plain conditional model); "
                             "autoguided ones: their w (default their own, 1: the main model alone).")
    parser.add_argument("--cluster_draws", choices=CLUSTER_DRAWS, default=None,
                        help="Cluster-conditional pipelines: draw the N images' clusters in proportion to their sizes "
                             "(stratified) or independently (iid); default the pipeline's own (stratified).")
    parser.add_argument("--mixed_precision", choices=("auto", "no", "bf16"), default="auto")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of the table.")
    args = parser.parse_args(argv)
    samplers = []
    for item in args.samplers:
        name, _, steps = item.partition(":")
        if name not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
            parser.error(f"--samplers {item!r}: write name:steps, e.g. dpmsolver:20")
        samplers.append((name, int(steps)))
    args.samplers = samplers
    if len(set(args.seed)) < len(args.seed):
        parser.error(f"--seed {' '.join(map(str, args.seed))}: give each seed once (each one is a draw), e.g. --seed 0 1000 2000")
    return args


def class_labels_and_guidance(pipeline, args):
    """A class-conditional pipeline's labels (N / K of each class), and the guidance scale to pass (class-conditional
    pipelines: default 1; autoguided ones: default their own); None and no options otherwise."""
    from diffusion_lab.sampling import guidance_kwargs, is_class_conditional, labels_for_samples

    try:
        options = guidance_kwargs(pipeline, args.guidance_scale)
        if args.cluster_draws is not None:
            if "cluster_draws" not in pipeline.config:
                raise ValueError(f"--cluster_draws applies to cluster-conditional pipelines only; {type(pipeline).__name__} draws no clusters: leave it out.")
            options["cluster_draws"] = args.cluster_draws
        return (labels_for_samples(pipeline, None, args.num_samples) if is_class_conditional(pipeline) else None), options
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from time_to_quality import digit_fd_over_draws

    from diffusion_lab.evaluation import evaluate_images
    from diffusion_lab.pipelines.export import load_pipeline
    from diffusion_lab.sampling import (
        autocast_with_fp32_outputs,
        generate,
        keeps_own_scheduler,
        use_sampler,
    )
    from diffusion_lab.training.precision import auto_mixed_precision

    precision = auto_mixed_precision(use_cpu=args.device == "cpu") if args.mixed_precision == "auto" else args.mixed_precision
    rows = []
    for name, steps in args.samplers:
        pipeline = load_pipeline(args.pipeline).to(args.device)
        if keeps_own_scheduler(pipeline):
            raise SystemExit("error: this pipeline keeps its own sampler (cold diffusion, DES): nothing to compare.")
        use_sampler(pipeline, name, steps)
        pipeline.set_progress_bar_config(disable=True)
        labels, options = class_labels_and_guidance(pipeline, args)
        num_images = args.num_samples if labels is None else len(labels)  # N // K of each of K classes
        autocast = torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
        seconds, draws = 0.0, []
        for seed in args.seed:
            began = time.perf_counter()
            with autocast_with_fp32_outputs(pipeline.unet, autocast):
                images = generate(pipeline, num_images, args.batch_size, seed, steps, labels, **options)
            seconds += time.perf_counter() - began
            draws.append(evaluate_images(torch.from_numpy(images).permute(0, 3, 1, 2), images_range="uint8", psnr_ssim=False, seed=0))
        fd = digit_fd_over_draws(draws)
        rows.append({"sampler": name, "steps": steps, **fd, "floor": draws[0]["digit_fd_real"],
                     "digit_is": statistics.fmean(draw["digit_is"] for draw in draws), "seconds": round(seconds, 1),
                     "images_per_second": num_images * len(args.seed) / seconds})
        print(f"{name}:{steps} done in {seconds:.0f} s: digit FD {' '.join(f'{value:.1f}' for value in fd['digit_fd_draws'])}", file=sys.stderr, flush=True)
    reference = rows[-1]["digit_fd"]
    for row in rows:
        row["fd_vs_reference"] = row["digit_fd"] / reference
    report = {"pipeline": args.pipeline, "num_samples": args.num_samples, "seeds": args.seed, "mixed_precision": precision,
              "guidance_scale": options.get("guidance_scale"), "cluster_draws": pipeline.config.get("cluster_draws") if args.cluster_draws is None else args.cluster_draws,
              "rows": rows}
    if args.json:
        print(json.dumps(report))
        return
    guidance = "" if report["guidance_scale"] is None else f", guidance {report['guidance_scale']:g}"
    guidance += "" if report["cluster_draws"] is None else f", clusters drawn {report['cluster_draws']}"
    print(f"N = {args.num_samples}{guidance}, {precision}, reference {rows[-1]['sampler']}:{rows[-1]['steps']}, "
          f"{len(args.seed)} draw(s) per sampler (seeds {', '.join(map(str, args.seed))})")
    print(f"{'sampler':>14} {'digit FD':>9} {'SD':>5} {'floor':>7} {'vs ref':>7} {'IS':>6} {'img/s':>7}")
    for row in rows:
        spread = f"{row['digit_fd_sd']:5.1f}" if row["digit_fd_sd"] is not None else f"{'-':>5}"
        print(f"{row['sampler'] + ':' + str(row['steps']):>14} {row['digit_fd']:9.1f} {spread} {row['floor']:7.1f} "
              f"{row['fd_vs_reference']:7.3f} {row['digit_is']:6.2f} {row['images_per_second']:7.1f}")


if __name__ == "__main__":
    main()
