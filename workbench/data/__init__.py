"""Datasets: ShapesWorld (synthetic, offline) and loaders for the benchmarks Perception-R1 trains on."""

from workbench.data.synthetic import from_dataset, generate, to_dataset

__all__ = ["generate", "to_dataset", "from_dataset"]
