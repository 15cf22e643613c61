"""Which data directory stands for which of the paper's data sets, and the noisy copies of ``reproduce noise``."""

import os

from ..data.datadir import read_data_dir
from ..data.noise import NOISE_DEFINITIONS
from ..data.prepare import prepare
from ..errors import UsageError
from .tables import PAPER_DATASETS


def _data_for(table_runs, data) -> dict:
    """The paper's data set -> the DataInfo standing for it (the rule: see the package docstring, ``Data:``)."""
    infos = [read_data_dir(d) for d in ([data] if isinstance(data, str) else data)]
    by_name = {}
    for info in infos:
        if info.dataset in by_name:
            raise UsageError(
                f"--data names two {info.dataset} directories ({by_name[info.dataset].root}, "
                f"{info.root}): pass one per data set"
            )
        by_name[info.dataset] = info
    stand_ins = [i for i in infos if i.dataset not in PAPER_DATASETS]
    chosen = {}
    for dataset in dict.fromkeys(run.dataset for run in table_runs):
        if dataset not in by_name and not stand_ins:
            raise UsageError(
                f"this table needs {PAPER_DATASETS[dataset]}: pass --data with a directory from "
                f"`fastsglr prepare --dataset {dataset}` (or a digits one for a quick look)"
            )
        chosen[dataset] = by_name.get(dataset) or stand_ins[0]
    return chosen


def _with_noise(info, rate, out, root, log):
    """The data directory with ``rate`` symmetric label noise on its training labels, prepared once under OUT."""
    if not rate:
        return info
    path = os.path.join(out, "data", f"{info.dataset}-symmetric{rate:g}")
    try:
        noisy = read_data_dir(path)
        # The definition too: a copy written before "symmetric" meant resampling holds other labels; and the shape
        # and counts: a synthetic copy of another size is another data set.
        if (noisy.noise["rate"], noisy.noise["type"], noisy.noise.get("definition")) == (
            rate,
            "symmetric",
            NOISE_DEFINITIONS["symmetric"],
        ) and (noisy.image_shape, noisy.counts) == (info.image_shape, info.counts):
            return noisy
    except UsageError:
        pass
    if info.dataset in PAPER_DATASETS and not root:
        raise UsageError(
            f"reproduce noise writes noisy copies of {info.dataset}: pass --root, the folder with the raw "
            f"CIFAR files that `fastsglr prepare` read"
        )
    log(f"preparing {path}: {info.dataset} with {rate:.0%} symmetric label noise")
    # The same seed as the clean directory: synthetic data is generated from it (CIFAR and digits ignore it).
    prepare(
        info.dataset,
        path,
        root=root,
        label_noise=rate,
        noise_type="symmetric",
        seed=info.noise["seed"],
        synthetic_train=info.counts["train"],
        synthetic_test=info.counts["test"],
        synthetic_size=info.image_size,
        log=log,
    )
    return read_data_dir(path)
