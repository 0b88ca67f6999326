"""tiffstore: many microscope TIFF files, one virtual Zarr array, no copy.

The public API is what this module exports: :func:`open` (folders, globs, lists,
URLs, reference files) giving a :class:`TiffStore`, with its options as one
:class:`OpenOptions`; :func:`write_references`; :func:`materialize`;
:func:`to_icechunk` (with the ``icechunk`` extra); the plain-data description of
the array (:class:`Manifest`, its :class:`ChunkPlan` s of :class:`Piece` s, made by
:func:`plan_chunk`); :func:`use_codec_pipeline` (importing tiffstore makes its codec
pipeline zarr's, for TiffStore arrays only, unless another was chosen or
``TIFFSTORE_CODEC_PIPELINE=0``); :func:`use_dask_optimization` (importing tiffstore
makes dask's array optimization read TiffStore chunks on the task's thread, unless
``array_optimize`` is set or ``TIFFSTORE_DASK_OPTIMIZE=0``); and the errors. Everything else
(the stage folders' modules, and names starting with an underscore) may change
between releases.

>>> import tiffstore, dask.array as da
>>> store = tiffstore.open("raw/")  # doctest: +SKIP
>>> array = da.from_zarr(store)  # doctest: +SKIP
"""

from typing import Any

from tiffstore._version import __version__
from tiffstore.errors import (
    FileChangedError,
    GpuError,
    GrowthError,
    LayoutMismatchError,
    MaterializeError,
    NamingError,
    OptionError,
    OutputError,
    OutputExistsError,
    ReadOnlyError,
    ReferenceError,
    ServeError,
    SourceError,
    TiffReadError,
    TiffStoreError,
)
from tiffstore.manifest.headers import verify_manifest
from tiffstore.manifest.model import Manifest
from tiffstore.manifest.plans import ChunkPlan, Piece, plan_chunk
from tiffstore.manifest.tables import FileTables
from tiffstore.opening import open
from tiffstore.options import OpenOptions
from tiffstore.outputs.materialize.journal import materialize_status
from tiffstore.outputs.materialize.run import MaterializeSummary, materialize
from tiffstore.outputs.references import write_references
from tiffstore.read.dask_graph import use_dask_optimization
from tiffstore.read.pipeline import PIPELINE_PATH, TiffCodecPipeline, use_codec_pipeline
from tiffstore.read.store import TiffMapping, TiffStore
from tiffstore.sources.settings import RemoteSettings

__all__ = [
    "PIPELINE_PATH",
    "ChunkPlan",
    "FileChangedError",
    "FileTables",
    "GpuError",
    "GrowthError",
    "LayoutMismatchError",
    "Manifest",
    "MaterializeError",
    "MaterializeSummary",
    "NamingError",
    "OpenOptions",
    "OptionError",
    "OutputError",
    "OutputExistsError",
    "Piece",
    "ReadOnlyError",
    "ReferenceError",
    "RemoteSettings",
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
    "plan_chunk",
    "to_icechunk",
    "use_codec_pipeline",
    "use_dask_optimization",
    "verify_manifest",
    "write_references",
]


def __getattr__(name: str) -> Any:
    # to_icechunk needs the icechunk extra: imported on first use, not by every import.
    if name == "to_icechunk":
        from tiffstore.outputs.icechunk.write import to_icechunk

        return to_icechunk
    raise AttributeError(f"module 'tiffstore' has no attribute {name!r}")
