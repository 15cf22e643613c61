"""A four-run grid for the launcher tests, registered as table ``tiny``: Table 2's standard-trained KD teacher (a
source), PGD-AT, PGD-AT+LS and KD-AT, which trains after both its teachers; each evaluated clean and under PGD-20 at
best.pt and final.pt. Run as a script, it is `fastsglr` with that table: ``python tests/tiny_grid.py reproduce tiny
--data DIGITS --out OUT ...`` (a worker or a SLURM task needs no table: it gets its run's config)."""

import dataclasses
import sys

from fastsglr.reproduce import TABLES, tables

ROWS = ("PGD-AT", "PGD-AT+LS", "KD-AT")


def tiny():
    table2 = tables._table2("paper")
    return dataclasses.replace(
        table2,
        title="tiny: Table 2's PGD-AT, PGD-AT+LS and KD-AT",
        runs=tuple(run for run in table2.runs if run.row in ROWS),
        attacks=("clean", "pgd20"),
        blocks=tables._best_final_blocks(tables.ACCURACY_METRICS[:2]),
    )


def register():
    TABLES["tiny"] = tiny


if __name__ == "__main__":
    from fastsglr.cli import main

    register()
    sys.exit(main())
