"""fastsglr: adversarially robust training with Self-Guided Label Refinement ("Soften to Defend", CVPR 2024)."""

__version__ = "0.1.0"

from .checkpoint import load_model  # noqa: E402  (the one call most users need)

__all__ = ["load_model", "__version__"]
