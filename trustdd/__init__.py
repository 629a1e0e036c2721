"""trustdd: Trustworthy Dataset Distillation (InD images + outliers) as a reproducible DVC pipeline."""

__version__ = "0.1.0"
