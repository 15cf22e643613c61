"""`make demo`: PGD-AT with hard labels vs PGD-AT + SGLR on the bundled digits data, side by side.

Small enough for 2 CPU cores in a few minutes: the small CNN on 8x8 digits, with eps 32/255 (8/255 is too weak a
perturbation to matter at this resolution). Prints each run's per-epoch table and the best / final / diff table.
"""

import argparse
import dataclasses
import os

from .config import Config, apply_preset, n_epochs, validate
from .data.datadir import read_data_dir
from .data.prepare import prepare
from .errors import UsageError
from .report import plot_curves, summary_table
from .trainer import read_history, train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="where the data and both runs go")
    parser.add_argument("--epochs", type=int, help="override the demo preset's epochs")
    args = parser.parse_args(argv)

    data = os.path.join(args.out, "data")
    try:
        read_data_dir(data)
    except UsageError:
        prepare("digits", data)
    base = apply_preset(Config(data=data, device="cpu"), "demo")
    if args.epochs:
        base = dataclasses.replace(base, epochs=args.epochs)
    summaries, histories = {}, {}
    for name, labels in (("PGD-AT", "hard"), ("PGD-AT+SGLR", "sglr")):
        cfg = validate(dataclasses.replace(base, labels=labels, out=os.path.join(args.out, labels)))
        print(f"\n== {name}: {cfg.model} on digits, eps {cfg.eps:.4f}, {n_epochs(cfg.epochs)} ==")
        summaries[name] = train(cfg, overwrite=True)
        histories[name] = read_history(cfg.out)
    print("\n" + summary_table(summaries))
    plot_curves(histories, os.path.join(args.out, "curves.png"))
    print(f"\ncurves of both runs: {os.path.join(args.out, 'curves.png')}")


if __name__ == "__main__":
    main()
