"""fastsglr: adversarial training with Self-Guided Label Refinement, fast.

The Triton kernels live in the top-level ``kernels/`` folder but install as ``fastsglr.kernels``:
PyPI already has a package called ``kernels``, so we never claim that top-level name.
"""

from setuptools import setup

setup(
    name="fastsglr",
    version="0.1.0",
    description="Fast, faithful adversarial training with Self-Guided Label Refinement (CVPR 2024)",
    python_requires=">=3.10",
    packages=[
        "fastsglr",
        "fastsglr.data",
        "fastsglr.models",
        "fastsglr.engine",
        "fastsglr.reproduce",
        "fastsglr.kernels",
    ],
    package_dir={"fastsglr": "fastsglr", "fastsglr.kernels": "kernels"},
    # torch 2.6 is the floor: torch.library.triton_op / wrap_triton appeared there.
    # scikit-learn ships the embedded `digits` data set that the demo and the tests use.
    install_requires=["torch>=2.6", "numpy>=1.24", "tqdm>=4.60", "scikit-learn>=1.3"],
    extras_require={
        "ffcv": ["ffcv==1.0.2", "numba>=0.58"],
        "extras": ["matplotlib>=3.7", "torchvision>=0.21", "torchattacks==3.5.1", "tensorboard>=2.14"],
        # reproduce --launcher slurm (fastsglr/reproduce/slurm.py)
        "slurm": ["submitit>=1.5"],
        "test": ["pytest>=8", "pytest-benchmark>=4", "ruff>=0.6"],
    },
    entry_points={"console_scripts": ["fastsglr = fastsglr.cli:main"]},
)
