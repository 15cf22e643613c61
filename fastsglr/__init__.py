"""fastsglr: adversarially robust training with Self-Guided Label Refinement ("Soften to Defend", CVPR 2024)."""
__version__ = "0.1.0"
