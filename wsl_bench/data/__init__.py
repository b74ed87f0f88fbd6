"""Datasets: the schema every cohort satisfies, SynthCXR, and the NIH ChestX-ray14 adapter."""

from wsl_bench.data.schema import BOX_COLUMNS, CXRDataset, Cohort

__all__ = ["BOX_COLUMNS", "CXRDataset", "Cohort"]
