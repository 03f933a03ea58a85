"""The torch side of the data layer: torch datasets over a Dataset or shards, samplers, and
the box-aware augmentation pipelines. Everything else in :mod:`detforge.data` is torch-free."""
