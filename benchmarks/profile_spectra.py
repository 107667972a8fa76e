"""Where the analysis time goes: cProfile of one thread over the 53 conv layers of timm's resnet50 at 224.

    PYTHONPATH=. python benchmarks/profile_spectra.py [--size 224] [--top 15]

Runs ``analyze_layer`` once untimed (warm-up), then once under cProfile, one analysis thread, and prints the
functions with the most internal time. The numbers in benchmarks/README.md ("where the time goes") are
from this script.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    from cbn_inspect.analysis import analyze_layer, configure_threads, resolve_grid
    from cbn_inspect.loaders import load
    from cbn_inspect.records import Settings

    configure_threads(1)
    layers = load("timm:resnet50", input_size=str(args.size), fold_batchnorm=False).layers
    settings = Settings(threads=1)
    weights = [layer.weight.load() for layer in layers]

    def run() -> None:
        for layer, weight in zip(layers, weights):
            analyze_layer(resolve_grid(layer, settings), weight, settings)

    run()
    profile = cProfile.Profile()
    profile.runcall(run)
    pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
