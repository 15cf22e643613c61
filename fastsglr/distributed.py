"""Several processes, one run: `torchrun --nproc_per_node=G -m fastsglr train ...` trains with PyTorch's
DistributedDataParallel.

What each rank does, and what keeps them one run:
- Batches: ``--batch-size`` is the GLOBAL batch. Each rank takes ``batch_size / G`` samples per step from its own
  shard (FFCV's distributed order, i.e. torch's DistributedSampler: one seeded permutation per epoch, rank r takes
  every G-th sample from position r), so a step sees the same number of samples as a single process would and the
  learning rate means the same. DDP averages the gradients.
- BatchNorm: per rank by default (each rank normalises by its own batch statistics; DDP broadcasts rank 0's running
  statistics at every training forward); ``--sync-bn`` uses SyncBatchNorm (CUDA only) over the global batch.
- Per-sample tables (SGLR's EMA table, TE's ensemble): every rank holds the whole N x K table. Within an epoch the
  shards are disjoint, so a row is only read again in a later epoch; at the end of every epoch each rank's updated
  rows are gathered into every rank's table (``sync_sample_tables``), so all ranks start the next epoch with the
  same table. When N is not a multiple of G, the sampler repeats up to G - 1 samples in an epoch; such a row takes
  the lowest rank's update.
- Randomness: every epoch reseeds each rank from (seed, epoch, rank), so ranks draw different attack starts and a
  resumed run, with any number of ranks, draws what it would have drawn.
- Only rank 0 writes the run directory; every rank reads the checkpoint to resume.
Outside torchrun, ``World()`` is one process and every function here is a no-op.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import TrainingError, UsageError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun (then the loaders shard, even for a single rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_world(device: str) -> World:
    """The process group torchrun describes in the environment (NCCL on CUDA, gloo on CPU), or one process."""
    if "WORLD_SIZE" not in os.environ:
        return World()
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]), True)
    if device == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise UsageError(
                f"torchrun started {world.size} processes on this node but only "
                f"{torch.cuda.device_count()} GPUs are visible: lower --nproc_per_node"
            )
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return world


def close_world(world: World):
    if world.launched and dist.is_initialized():
        dist.destroy_process_group()


def device_of(world: World, device: str) -> torch.device:
    return torch.device(f"cuda:{world.local_rank}") if device == "cuda" else torch.device(device)


def per_rank_batch(world: World, batch_size: int) -> int:
    if batch_size % world.size:
        raise UsageError(
            f"--batch-size {batch_size} is the global batch and must split evenly over the "
            f"{world.size} ranks: choose a multiple of {world.size}"
        )
    return batch_size // world.size


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one rank's global RNG during one epoch (attack starts, dropout, anything not augmentation)."""
    return (seed * 1_000_003 + epoch) * 1_009 + rank


def wrap_model(world: World, model, sync_bn: bool):
    """``model`` as DDP trains it (SyncBatchNorm with ``sync_bn``), or itself in a single process."""
    if not world.launched:
        return model
    if sync_bn:  # swaps the BN modules in place, keeping their parameters: the optimizer still holds them
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [world.local_rank] if next(model.parameters()).device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model):
    """The module inside DDP: attacks and no-grad forwards run on it, so they trigger no DDP hooks or collectives."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def sum_over_ranks_(*tensors):
    """In-place sum over ranks (metric accumulators), a no-op in a single process."""
    if dist.is_initialized():
        for t in tensors:
            dist.all_reduce(t)


def min_over_ranks_(tensor):
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)


def broadcast_buffers_(model):
    """Rank 0's BatchNorm running statistics everywhere: every rank then evaluates the model rank 0 saves."""
    if dist.is_initialized():
        for buffer in unwrap(model).buffers():
            dist.broadcast(buffer, 0)


def sync_sample_tables(world: World, tables, visited: torch.Tensor):
    """Every rank's updated rows of the per-sample ``tables`` into every rank's copy (see the module docstring).

    ``visited`` (N,) bool marks the rows this rank's batches touched since the last sync. A row visited by several
    ranks takes the lowest rank's value; a row visited by none keeps its (identical) value.
    """
    if not world.launched or not tables:
        return
    owner = torch.where(visited, world.rank, world.size).to(torch.int32)
    min_over_ranks_(owner)
    mine, touched = owner == world.rank, owner < world.size
    for table in tables:
        rows = torch.where(mine[:, None], table, torch.zeros_like(table))
        dist.all_reduce(rows)  # one owner per row: x + 0 + ... + 0 = x exactly
        table.copy_(torch.where(touched[:, None], rows, table))


def identical_across_ranks(tensors) -> bool:
    """Whether every rank holds bit-identical ``tensors`` (elementwise max == min over ranks). One host sync."""
    if not dist.is_initialized():
        return True
    same = True
    for t in tensors:
        hi, lo = t.detach().clone(), t.detach().clone()
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        same = same and torch.equal(hi, lo)
    return same


def check_ranks_agree(world: World, model, tables, epoch: int):
    """A run whose ranks drifted apart is no longer one run: stop with the reason instead of training on."""
    if not world.launched:
        return
    if not identical_across_ranks(list(unwrap(model).parameters())):
        raise TrainingError(
            f"the model weights differ between ranks after epoch {epoch}: a DDP bug; resume from last.pt"
        )
    if tables and not identical_across_ranks(tables):
        raise TrainingError(
            f"the per-sample label tables differ between ranks after epoch {epoch}; resume from last.pt"
        )


def barrier(world: World):
    if world.launched and dist.is_initialized():
        dist.barrier()
