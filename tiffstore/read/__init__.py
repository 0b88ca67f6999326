"""The read stage: executing the manifest's chunk plans.

:class:`~tiffstore.read.store.TiffStore` is the zarr-python 3 store;
:class:`~tiffstore.read.assemble.ChunkReader` fills chunks as their plans say;
:mod:`~tiffstore.read.keys` and :mod:`~tiffstore.read.shards` map keys and shards
onto chunks; :mod:`~tiffstore.read.pipeline` reads whole chunks straight into zarr's
output; :mod:`~tiffstore.read.dask_array` and :mod:`~tiffstore.read.gpu` read into
dask and device memory. Nothing here parses a file name or a TIFF header it was not
asked to check.
"""
