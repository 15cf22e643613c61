"""Raw readers: every data set as uint8 NHWC images, int64 labels, class names and checksums of the files read.

This is the one place that knows file formats. Everything downstream (the FFCV writer, the device loader, the
label-noise step) sees the same `RawDataset`, whatever the source:

- cifar10 / cifar100: the official python-pickle releases, extracted or still in their .tar.gz, downloaded
  through torchvision only when absent and only with a short network timeout;
- digits: scikit-learn's bundled 8x8 handwritten digits, a small real data set for quick end-to-end runs;
- synthetic: CIFAR-shaped images with learnable class structure, generated from a seed, for tests and
  benchmarks that must not depend on downloads.

Any problem with a file a user supplied is reported as a one-line `UsageError` naming the file and the fix.
"""

import hashlib
import importlib.resources
import io
import pickle
import socket
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import UsageError

DATASETS = ("cifar10", "cifar100", "digits", "synthetic")


@dataclass
class Split:
    images: np.ndarray  # uint8, (N, H, W, C)
    labels: np.ndarray  # int64, (N,)


@dataclass
class RawDataset:
    name: str
    classes: list[str]  # class names, len = K
    train: Split
    test: Split
    superclass: np.ndarray | None  # CIFAR-100 only: int64 (100,), fine label -> coarse label
    source_files: dict[str, str]  # file name -> sha256 of the raw files read; {} for generated data
    # Whether a mirrored image still shows its class, so training may flip it: CIFAR's objects and the synthetic
    # colour patterns yes, handwritten digits no (a mirrored 2, 3, 4, 5, 7 or 9 is not that digit).
    horizontal_flip: bool = True


def load_raw(
    name: str,
    root: str | None = None,
    *,
    seed: int = 0,
    synthetic_train: int = 50_000,
    synthetic_test: int = 10_000,
    synthetic_size: int = 32,
    download: bool = True,
) -> RawDataset:
    """Read (or generate) data set `name`.

    `root` is the folder holding (or to receive) the CIFAR files; `seed`, the sizes and the side only affect synthetic.
    """
    if name in _CIFAR:
        return _load_cifar(_CIFAR[name], root, download)
    if name == "digits":
        return _load_digits()
    if name == "synthetic":
        return _make_synthetic(seed, synthetic_train, synthetic_test, synthetic_size)
    raise UsageError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}")


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of uint8 (N, H, W, C) images, in [0, 1] units.

    Computed from exact per-channel histograms rather than float arrays, so 50,000 CIFAR images need no
    1 GB float copy and the result does not depend on summation order.
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.size == 0:
        raise ValueError(f"channel_stats needs non-empty uint8 (N, H, W, C) images, got {images.dtype} {images.shape}")
    values = np.arange(256) / 255
    pixels_per_channel = images.size // images.shape[3]
    means, stds = [], []
    for c in range(images.shape[3]):
        freq = np.bincount(images[..., c].ravel(), minlength=256) / pixels_per_channel
        mean = float(freq @ values)
        means.append(mean)
        stds.append(float(np.sqrt(max(freq @ values**2 - mean**2, 0.0))))
    return means, stds


# --------------------------------------------------------------------------------------------------- CIFAR


@dataclass(frozen=True)
class _CifarRelease:
    """Where one official python release keeps what, so CIFAR-10 and CIFAR-100 share one reader."""

    name: str
    title: str  # for messages
    archive: str  # the .tar.gz as distributed
    folder: str  # what the archive extracts to
    train: tuple[str, ...]  # pickles of the training split, in order
    test: tuple[str, ...]
    meta: str  # the pickle with the class names
    names_key: str
    labels_key: str
    num_classes: int
    torchvision_class: str  # the torchvision.datasets class that can download it

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, *self.test, self.meta)


_CIFAR = {
    "cifar10": _CifarRelease(
        "cifar10",
        "CIFAR-10",
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "label_names",
        "labels",
        10,
        "CIFAR10",
    ),
    "cifar100": _CifarRelease(
        "cifar100",
        "CIFAR-100",
        "cifar-100-python.tar.gz",
        "cifar-100-python",
        ("train",),
        ("test",),
        "meta",
        "fine_label_names",
        "fine_labels",
        100,
        "CIFAR100",
    ),
}

_CIFAR_SIDE = 32
_DOWNLOAD_TIMEOUT_S = 10  # offline machines are the usual case: fail in seconds, not after minutes of retries


class _RawFile(NamedTuple):
    where: str  # how messages name the file: a path, or "archive:member"
    data: bytes


def _load_cifar(release: _CifarRelease, root: str | None, download: bool) -> RawDataset:
    if root is None:
        raise UsageError(
            f"{release.title} needs a data root: give the folder that holds {release.archive} "
            f"(or the extracted {release.folder}/)"
        )
    folder = Path(root).expanduser().absolute()  # messages then say exactly where the files go
    if not _cifar_present(release, folder):
        _fetch_cifar(release, folder, download)
    files, source_files = _read_cifar_files(release, folder)
    batches = {name: _decode_batch(release, files[name]) for name in (*release.train, *release.test)}
    train = _join_batches([batches[name] for name in release.train])
    test = _join_batches([batches[name] for name in release.test])
    return RawDataset(
        name=release.name,
        classes=_class_names(release, files[release.meta]),
        train=Split(train["images"], train["labels"]),
        test=Split(test["images"], test["labels"]),
        superclass=_superclass_map(release, train, test) if "coarse" in train else None,
        source_files=source_files,
    )


def _cifar_present(release: _CifarRelease, root: Path) -> bool:
    return (root / release.folder).is_dir() or (root / release.archive).is_file()


def _not_found(release: _CifarRelease, root: Path, why: str, fix: str) -> UsageError:
    return UsageError(
        f"{release.title} not found under {root}{why}: put {release.archive} "
        f"(or the extracted {release.folder}/) there, or {fix}"
    )


def _fetch_cifar(release: _CifarRelease, root: Path, download: bool) -> None:
    """Download through torchvision, or explain where the files go.

    The socket timeout is what keeps an offline machine from hanging: torchvision's urllib calls take the
    process-wide default, which we set for the duration of the download only.
    """
    if not download:
        raise _not_found(release, root, "", "allow the download")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        import torchvision.datasets

        getattr(torchvision.datasets, release.torchvision_class)(str(root), train=True, download=True)
    except Exception as e:  # no torchvision, no network, timeout, bad checksum: all mean "cannot download here"
        why = f" and the download failed ({_one_line(e)})"
        raise _not_found(release, root, why, "run where the network is reachable") from None
    finally:
        socket.setdefaulttimeout(previous)


def _read_cifar_files(release: _CifarRelease, root: Path) -> tuple[dict[str, _RawFile], dict[str, str]]:
    """The release's pickles by name, plus sha256 checksums of what was read. The extracted folder wins: it is
    what torchvision leaves behind and it skips a decompression."""
    if (root / release.folder).is_dir():
        return _read_folder(release, root)
    return _read_archive(release, root / release.archive)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {path} ({_one_line(e)}): check that it is a readable file") from None


def _read_folder(release: _CifarRelease, root: Path) -> tuple[dict[str, _RawFile], dict[str, str]]:
    files, checksums = {}, {}
    for name in release.files:
        path = root / release.folder / name
        if not path.is_file():
            raise UsageError(
                f"{path} is missing: {release.folder}/ must hold {', '.join(release.files)}; "
                f"re-extract {release.archive} into {root}"
            )
        data = _read_bytes(path)
        files[name] = _RawFile(str(path), data)
        checksums[f"{release.folder}/{name}"] = hashlib.sha256(data).hexdigest()
    return files, checksums


def _read_archive(release: _CifarRelease, path: Path) -> tuple[dict[str, _RawFile], dict[str, str]]:
    """Read the pickles straight out of the .tar.gz, walking it once in order (gzip cannot seek cheaply)."""
    raw = _read_bytes(path)
    wanted = {f"{release.folder}/{name}": name for name in release.files}
    files = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    files[wanted[member.name]] = _RawFile(f"{path}:{member.name}", tar.extractfile(member).read())
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        fix = f"delete it and download {release.archive} again"
        raise UsageError(f"{path} is corrupt or truncated ({_one_line(e)}): {fix}") from None
    missing = [member for member, name in wanted.items() if name not in files]
    if missing:
        raise UsageError(
            f"{path} lacks {', '.join(missing)}: replace it with the official {release.title} python release"
        )
    return files, {release.archive: hashlib.sha256(raw).hexdigest()}


def _one_line(error: BaseException) -> str:
    """An exception as message text that cannot break the one-line rule of UsageError."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _bad_content(file: _RawFile, problem: str) -> UsageError:
    return UsageError(f"{file.where} {problem}: replace it with the official file")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR pickles hold: dicts, lists, strings, numbers and numpy arrays.

    Unpickling calls whatever the file names, so an arbitrary file sitting where CIFAR should be could run code.
    The allow-list turns that into a clean "not a CIFAR pickle" error. It covers numpy 1 and 2 module paths
    and the pickle protocols that numpy arrays and Python 3 bytes use.
    """

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}")
        return super().find_class(module, name)


def _unpickle(file: _RawFile) -> dict:
    """The pickled dict with str keys (the official files are Python 2 pickles, hence encoding="bytes")."""
    try:
        obj = _CifarUnpickler(io.BytesIO(file.data), encoding="bytes").load()
    except Exception as e:  # garbage input can fail in any way the pickle machine can: all mean "bad file"
        raise _bad_content(file, f"is not a valid CIFAR pickle ({_one_line(e)})") from None
    if not isinstance(obj, dict):
        raise _bad_content(file, "is not a valid CIFAR pickle (no dict inside)")
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _labels_array(file: _RawFile, values, size: int, num_classes: int, key: str) -> np.ndarray:
    labels = np.asarray(values)
    if labels.shape != (size,) or not np.issubdtype(labels.dtype, np.integer):
        raise _bad_content(file, f"has {key} of shape {labels.shape} for {size} images")
    if size and (labels.min() < 0 or labels.max() >= num_classes):
        raise _bad_content(file, f"has {key} outside 0..{num_classes - 1}")
    return labels.astype(np.int64)


def _decode_batch(release: _CifarRelease, file: _RawFile) -> dict[str, np.ndarray]:
    """One batch pickle -> NHWC images and labels (and coarse labels for CIFAR-100), checked.

    Each row of `data` is the red plane, then green, then blue, each 32x32 row-major; hence the reshape to
    (N, 3, 32, 32) and the move of the channel axis to the end.
    """
    batch = _unpickle(file)
    data = batch.get("data")
    row_length = 3 * _CIFAR_SIDE**2
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row_length:
        raise _bad_content(file, "has no uint8 'data' array of shape (N, 3072)")
    n = len(data)
    decoded = {
        "images": np.ascontiguousarray(data.reshape(n, 3, _CIFAR_SIDE, _CIFAR_SIDE).transpose(0, 2, 3, 1)),
        "labels": _labels_array(file, batch.get(release.labels_key), n, release.num_classes, release.labels_key),
    }
    if "coarse_labels" in batch:
        decoded["coarse"] = _labels_array(file, batch["coarse_labels"], n, release.num_classes, "coarse_labels")
    return decoded


def _join_batches(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def _class_names(release: _CifarRelease, file: _RawFile) -> list[str]:
    names = _unpickle(file).get(release.names_key)
    if not isinstance(names, list) or len(names) != release.num_classes:
        raise _bad_content(file, f"has no list of {release.num_classes} '{release.names_key}'")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _superclass_map(release: _CifarRelease, train: dict, test: dict) -> np.ndarray:
    """fine label -> coarse label, read off the per-image coarse_labels of both splits.

    The map must be a function (one coarse label per fine class) and cover every fine class; anything else
    means the pickles are not the official release.
    """
    fine = np.concatenate([train["labels"], test["labels"]])
    coarse = np.concatenate([train["coarse"], test["coarse"]])
    superclass = np.full(release.num_classes, -1, dtype=np.int64)
    superclass[fine] = coarse
    consistent = np.array_equal(superclass[fine], coarse)
    if not consistent or (superclass < 0).any():
        raise UsageError(
            f"the coarse_labels of {release.folder} do not map each fine class to one superclass: "
            f"replace the files with the official {release.archive}"
        )
    return superclass


# -------------------------------------------------------------------------------------------------- digits

_DIGITS_TEST_FRACTION = 0.25
_DIGITS_SPLIT_SEED = 0  # a constant on purpose: the split is part of the data set, not of the run


def _load_digits() -> RawDataset:
    """scikit-learn's 1,797 real 8x8 digits, scaled from 0..16 to 0..255, with a fixed stratified split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise UsageError("the digits data set needs scikit-learn: pip install scikit-learn") from None
    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    train, test = train_test_split(
        np.arange(len(labels)), test_size=_DIGITS_TEST_FRACTION, stratify=labels, random_state=_DIGITS_SPLIT_SEED
    )
    return RawDataset(
        name="digits",
        classes=[str(d) for d in range(10)],
        train=Split(images[train], labels[train]),
        test=Split(images[test], labels[test]),
        superclass=None,
        source_files=_digits_checksum(),
        horizontal_flip=False,
    )


def _digits_checksum() -> dict[str, str]:
    """sha256 of the csv that load_digits reads, so meta.json pins the data as for CIFAR."""
    csv = importlib.resources.files("sklearn.datasets") / "data" / "digits.csv.gz"
    return {"digits.csv.gz": hashlib.sha256(csv.read_bytes()).hexdigest()} if csv.is_file() else {}


# ----------------------------------------------------------------------------------------------- synthetic

_SYNTH_CLASSES = 10
_SYNTH_GRID = 4  # class patterns and per-image nuisance are 4x4x3 grids upsampled to 32x32: smooth, low-frequency
_SYNTH_GRID_SHAPE = (_SYNTH_GRID, _SYNTH_GRID, 3)
_SYNTH_SIGNAL = 20.0  # grey levels per unit of grid value: the class pattern ...
_SYNTH_NUISANCE = 45.0  # ... a per-image random pattern of the same kind, which makes the classes overlap ...
_SYNTH_PIXEL_NOISE = 40.0  # ... and the half-width of uniform per-pixel noise (uniform: 5x cheaper than normal)
_SYNTH_CHUNK = 1_000  # images per step, in two reused 12 MB float32 buffers: fresh full-size temporaries cost
# more (page faults) than the arithmetic itself


SYNTHETIC_SIZES = (32, 16, 8)


def _make_synthetic(seed: int, n_train: int, n_test: int, side: int = 32) -> RawDataset:
    """CIFAR-shaped images whose class is a fixed smooth colour pattern, hidden under image-level and pixel noise.

    Learnable (nearest class mean gets about 80 %, a small CNN more, within a few epochs) but not saturated,
    because every image also carries a random pattern as smooth as, and stronger than, its class pattern. Prototypes,
    train and test draw from independent streams of `seed`, so the test set does not change with the train size.
    A ``side`` below 32 averages blocks of the 32 x 32 images: the same classes at a fraction of the compute (each
    8 x 8 pixel the mean of a 4 x 4 block), for CPU-scale studies such as the stand-in of docs/reproduce.md.
    """
    if side not in SYNTHETIC_SIZES:
        raise UsageError(f"--synthetic-size {side} is not offered: choose 32, 16 or 8")
    for what, n in (("train", n_train), ("test", n_test)):
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise UsageError(f"synthetic {what} size {n!r} is invalid: give a positive number of images")
    proto_seq, train_seq, test_seq = np.random.SeedSequence(seed).spawn(3)
    prototypes = np.random.default_rng(proto_seq).standard_normal(
        (_SYNTH_CLASSES, *_SYNTH_GRID_SHAPE), dtype=np.float32
    )
    return RawDataset(
        name="synthetic",
        classes=[f"class{k}" for k in range(_SYNTH_CLASSES)],
        train=_block_mean(_synthetic_split(np.random.default_rng(train_seq), prototypes, n_train), side),
        test=_block_mean(_synthetic_split(np.random.default_rng(test_seq), prototypes, n_test), side),
        superclass=None,
        source_files={},
        # A mirrored image shows the mirrored class pattern, which is no class's pattern.
        horizontal_flip=False,
    )


def _block_mean(split: Split, side: int) -> Split:
    """The images shrunk to side x side, each pixel the rounded mean of its block of the 32 x 32 image."""
    if side == _CIFAR_SIDE:
        return split
    k = _CIFAR_SIDE // side
    blocks = split.images.reshape(-1, side, k, side, k, 3).mean(axis=(2, 4), dtype=np.float32)
    return Split(np.rint(blocks).astype(np.uint8), split.labels)


def _upsample_matrix() -> np.ndarray:
    """(32, grid) bilinear interpolation weights: image = U @ grid @ U.T, per channel, is smooth."""
    positions = np.linspace(0, _SYNTH_GRID - 1, _CIFAR_SIDE)
    return np.maximum(0.0, 1.0 - np.abs(positions[:, None] - np.arange(_SYNTH_GRID)[None, :])).astype(np.float32)


def _upsample(grids: np.ndarray, out: np.ndarray) -> np.ndarray:
    """(m, g, g, 3) grids -> (m, 32, 32, 3) images into `out`: rows first (a tiny product), then columns."""
    up = _upsample_matrix()
    m = len(grids)
    rows = np.matmul(up, grids.reshape(m, _SYNTH_GRID, -1)).reshape(m, _CIFAR_SIDE, _SYNTH_GRID, 3)
    return np.matmul(up, rows, out=out)


def _synthetic_split(rng: np.random.Generator, prototypes: np.ndarray, n: int) -> Split:
    """n images with balanced labels. Everything smooth is mixed on the 4x4 grids (upsampling is linear), so
    only one full-size upsample and one full-size noise draw happen per image, in reused buffers."""
    labels = rng.permutation(np.arange(n) % _SYNTH_CLASSES).astype(np.int64)
    images = np.empty((n, _CIFAR_SIDE, _CIFAR_SIDE, 3), dtype=np.uint8)
    pixels = np.empty((min(n, _SYNTH_CHUNK), _CIFAR_SIDE, _CIFAR_SIDE, 3), dtype=np.float32)
    noise = np.empty_like(pixels)
    for start in range(0, n, _SYNTH_CHUNK):
        chunk = labels[start : start + _SYNTH_CHUNK]
        m = len(chunk)
        grids = _SYNTH_SIGNAL * prototypes[chunk]
        grids += _SYNTH_NUISANCE * rng.standard_normal((m, *_SYNTH_GRID_SHAPE), dtype=np.float32)
        p = _upsample(grids, pixels[:m])
        rng.random(dtype=np.float32, out=noise[:m])  # uniform [0, 1) -> [-half-width, +half-width) below
        p += (2 * _SYNTH_PIXEL_NOISE) * noise[:m]
        p += 127.5 - _SYNTH_PIXEL_NOISE
        np.clip(np.rint(p, out=p), 0, 255, out=p)
        images[start : start + m] = p
    return Split(images, labels)
