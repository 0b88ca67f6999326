"""The outputs stage: writers that consume the manifest's chunk plans.

:mod:`~tiffstore.outputs.references` writes fsspec reference files (kerchunk JSON,
Parquet); :mod:`~tiffstore.outputs.materialize` writes a real, compressed Zarr copy.
A new output format is a new module here, not a change to the core.
"""
