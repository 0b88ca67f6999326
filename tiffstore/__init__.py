"""tiffstore: many microscope TIFF files, one virtual Zarr array, no copy.

>>> import tiffstore, dask.array as da
>>> store = tiffstore.open("raw/")  # doctest: +SKIP
>>> array = da.from_zarr(store)  # doctest: +SKIP
"""

from ._version import __version__
from .api import open
from .errors import (
    FileChangedError,
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
from .store import TiffMapping, TiffStore

__all__ = [
    "FileChangedError",
    "LayoutMismatchError",
    "Manifest",
    "MaterializeError",
    "MaterializeSummary",
    "NamingError",
    "OptionError",
    "ReadOnlyError",
    "SourceError",
    "TiffMapping",
    "TiffReadError",
    "TiffStore",
    "TiffStoreError",
    "__version__",
    "materialize",
    "materialize_status",
    "open",
]
