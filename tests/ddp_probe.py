"""Run under torchrun by tests/test_distributed.py: `fastsglr train` with every rank leaving evidence behind.

    python -m torch.distributed.run --nproc_per_node=G tests/ddp_probe.py EVIDENCE_DIR train --data ... --out ...

Each rank writes into EVIDENCE_DIR, without changing what the run computes:
- ``tables-rank{r}.pt``: its copy of the per-sample label tables after every end-of-epoch sync;
- ``order-rank{r}.pt``: the sample indices of each of its training batches in epochs 0 and 1, from the device
  loader and from the FFCV loader (which must agree: the device loader re-implements FFCV's distributed order).
"""

import os
import sys

import torch

import fastsglr.trainer as trainer
from fastsglr.cli import main
from fastsglr.data.beton import ffcv_available
from fastsglr.data.datadir import read_data_dir
from fastsglr.data.loaders import DeviceLoader, FFCVLoader
from fastsglr.distributed import init_world, per_rank_batch


def record_orders(evidence, data, batch_size, world):
    info = read_data_dir(data)
    orders = {}
    # The GPU box has no FFCV: the two-GPU test there needs the tables, not the orders.
    for kind, loader_class in (("device", DeviceLoader), ("ffcv", FFCVLoader))[: 2 if ffcv_available() else 1]:
        loader = loader_class(info, "train", per_rank_batch(world, batch_size), "cpu", train=True, seed=0, world=world)
        orders[kind] = [[batch.index.tolist() for batch in loader] for _epoch in range(2)]
    torch.save(orders, os.path.join(evidence, f"order-rank{world.rank}.pt"))


def record_tables(evidence, rank):
    real_sync = trainer.sync_sample_tables
    snapshots = []

    def sync_and_record(world, tables, visited):
        real_sync(world, tables, visited)
        snapshots.append([t.clone() for t in tables])
        torch.save(snapshots, os.path.join(evidence, f"tables-rank{rank}.pt"))

    trainer.sync_sample_tables = sync_and_record


if __name__ == "__main__":
    evidence, argv = sys.argv[1], sys.argv[2:]
    world = init_world(argv[argv.index("--device") + 1])  # the backend the run itself would pick
    record_orders(evidence, argv[argv.index("--data") + 1], int(argv[argv.index("--batch-size") + 1]), world)
    record_tables(evidence, world.rank)
    sys.exit(main(argv))
