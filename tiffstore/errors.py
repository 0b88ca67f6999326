"""The errors tiffstore raises.

Every message names the file (or files) concerned and says what to do about it,
so that a user never has to read a traceback from deep inside a dependency.
"""

from __future__ import annotations

__all__ = [
    "FileChangedError",
    "GpuError",
    "GrowthError",
    "LayoutMismatchError",
    "MaterializeError",
    "NamingError",
    "OptionError",
    "OutputError",
    "OutputExistsError",
    "ReadOnlyError",
    "ReferenceError",
    "ServeError",
    "SourceError",
    "TiffReadError",
    "TiffStoreError",
]


class TiffStoreError(Exception):
    """Base class of every error tiffstore raises on purpose."""


class SourceError(TiffStoreError, FileNotFoundError):
    """The source (folder, glob or list of files) holds no usable TIFF files."""


class NamingError(TiffStoreError, ValueError):
    """The file names cannot be mapped onto the axes of one array.

    The message shows the fields that were found and a template to start from.
    """


class LayoutMismatchError(TiffStoreError, ValueError):
    """Files that should form one array disagree in shape, dtype, samples or byte order."""


class TiffReadError(TiffStoreError, OSError):
    """A TIFF file could not be read or is not what its header promised (truncated, corrupt)."""


class FileChangedError(TiffReadError):
    """A file was replaced, grown, cut, touched or removed after the store was opened."""


class GrowthError(TiffStoreError, ValueError):
    """A source changed in a way that does not grow its array: files rewritten or removed,
    a new value in the middle of an axis, another shape, dtype or chunks."""


class OptionError(TiffStoreError, ValueError):
    """An option has a value tiffstore does not understand (chunks, fill_value, tiles...)."""


class ReadOnlyError(TiffStoreError, PermissionError):
    """A write was attempted on the virtual store, which is read-only by design."""


class ServeError(TiffStoreError, OSError):
    """The store cannot be served as asked (the address is taken, a name is reserved)."""


class MaterializeError(TiffStoreError, ValueError):
    """A materialize output cannot be written as asked: it exists, differs, or is not ours."""


class GpuError(TiffStoreError, RuntimeError):
    """A read into GPU memory was asked for where CuPy or a CUDA device is missing."""


class ReferenceError(TiffStoreError, ValueError):
    """The virtual array cannot be described by references with the chunks asked for, or
    a reference file no longer holds the references tiffstore wrote (combined or edited
    by another tool), so tiffstore will not open it from the manifest saved in it."""


class OutputError(TiffStoreError, OSError):
    """An output (a reference file, a Zarr copy, a picture) cannot be written where asked."""


class OutputExistsError(OutputError, FileExistsError):
    """An output exists and overwriting it was not asked for."""
