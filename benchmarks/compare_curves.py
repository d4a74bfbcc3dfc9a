"""Several time-to-quality curves in one plot: digit FD against training minutes, a line per curve.json.

    python benchmarks/compare_curves.py "old default=runs/ttq-old/time_to_quality/curve.json" \\
        "new default=runs/ttq-default/time_to_quality/curve.json" --output curves.png

Each argument is LABEL=PATH (or a PATH, labelled by its command). The floor drawn is the first curve's; compare curves
scored at the same N.
"""

import argparse
import json
import sys
from pathlib import Path

from time_to_quality import plot_curves


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("curves", nargs="+", help="LABEL=curve.json, or curve.json")
    parser.add_argument("--output", required=True, help="The PNG to write.")
    parser.add_argument("--title", default="time to quality", help="The plot's title.")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    curves = {}
    for argument in args.curves:
        label, _, path = argument.rpartition("=")
        if not Path(path).is_file():
            parser.error(f"{path} is not a file: pass the curve.json a time_to_quality run wrote")
        report = json.loads(Path(path).read_text())
        label = label or report["command"]
        curves[label if label not in curves else f"{label} ({path})"] = report["points"]
    sizes = {points[0]["num_samples"] for points in curves.values() if points}
    if len(sizes) > 1:
        parser.error(f"the curves were scored at different N ({sorted(sizes)}): their FDs are not comparable")
    plot_curves(curves, args.title, Path(args.output))


if __name__ == "__main__":
    main()
