"""tiffstore: many microscope TIFF files, one virtual Zarr array, no copy.

The public API is what this module exports: :func:`open` (folders, globs, lists,
URLs, reference files) giving a :class:`TiffStore`; :func:`write_references`;
:func:`materialize`; the plain-data description of the array (:class:`Manifest`,
its :class:`ChunkPlan` s of :class:`Piece` s); and the errors. Everything else
(modules and names starting with an underscore, or not exported here) may change
between releases.

>>> import tiffstore, dask.array as da
>>> store = tiffstore.open("raw/")  # doctest: +SKIP
>>> array = da.from_zarr(store)  # doctest: +SKIP
"""

from ._version import __version__
from .api import open
from .errors import (
    FileChangedError,
    GpuError,
    LayoutMismatchError,
    MaterializeError,
    NamingError,
    OptionError,
    ReadOnlyError,
    ServeError,
    SourceError,
    TiffReadError,
    TiffStoreError,
)
from .manifest import FileTables, Manifest
from .materialize import MaterializeSummary, materialize, materialize_status
from .pipeline import PIPELINE_PATH, TiffCodecPipeline
from .plans import ChunkPlan, Piece
from .references import ReferenceError, write_references
from .store import TiffMapping, TiffStore

__all__ = [
    "PIPELINE_PATH",
    "ChunkPlan",
    "FileChangedError",
    "FileTables",
    "GpuError",
    "LayoutMismatchError",
    "Manifest",
    "MaterializeError",
    "MaterializeSummary",
    "NamingError",
    "OptionError",
    "Piece",
    "ReadOnlyError",
    "ReferenceError",
    "ServeError",
    "SourceError",
    "TiffCodecPipeline",
    "TiffMapping",
    "TiffReadError",
    "TiffStore",
    "TiffStoreError",
    "__version__",
    "materialize",
    "materialize_status",
    "open",
    "write_references",
]
