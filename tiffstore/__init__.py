"""tiffstore: many microscope TIFF files, one virtual Zarr array, no copy.

>>> import tiffstore, dask.array as da
>>> store = tiffstore.open("raw/")  # doctest: +SKIP
>>> array = da.from_zarr(store)  # doctest: +SKIP
"""

from ._version import __version__
from .api import open
from .errors import (
    LayoutMismatchError,
    NamingError,
    OptionError,
    ReadOnlyError,
    SourceError,
    TiffReadError,
    TiffStoreError,
)
from .manifest import Manifest
from .materialize import MaterializeError, MaterializeSummary, materialize, materialize_status
from .pipeline import PIPELINE_PATH, TiffCodecPipeline
from .store import TiffMapping, TiffStore

__all__ = [
    "PIPELINE_PATH",
    "LayoutMismatchError",
    "Manifest",
    "MaterializeError",
    "MaterializeSummary",
    "NamingError",
    "OptionError",
    "ReadOnlyError",
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
]
