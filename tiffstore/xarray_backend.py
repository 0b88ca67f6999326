"""An xarray backend: ``xr.open_dataset("raw/", engine="tiffstore", chunks={})``.

Registered through the ``xarray.backends`` entry point. It opens the TIFF files as a
:class:`~tiffstore.store.TiffStore` and hands the store's group view to xarray's own
Zarr backend, so the Dataset is exactly what ``xr.open_zarr(store)`` gives: named
dims, the coordinates found in the names (wavelength on ``ch``, timestamps over
``ch``/``stack``) and every coordinate the store describes, read lazily (with dask
when ``chunks=`` is given; ``chunks={}`` keeps the store's chunks).

A reference file tiffstore wrote (``*.json``, or a ``*.parq`` folder) is read
through fsspec's reference file system, as any Zarr reader would read it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from xarray.backends import BackendEntrypoint
from xarray.backends.zarr import ZarrBackendEntrypoint

from .detect import is_reference_file, is_tiff_source
from .documents import GROUP_V3
from .store import TiffStore

if TYPE_CHECKING:
    from .build import ChunkSpec

__all__ = ["TiffStoreBackendEntrypoint", "open_reference_mapper"]

_DECODERS = (
    "mask_and_scale",
    "decode_times",
    "concat_characters",
    "decode_coords",
    "use_cftime",
    "decode_timedelta",
)


def open_reference_mapper(
    path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> Any:
    """An fsspec mapper over a reference file (JSON, or a Parquet reference folder).

    ``storage_options`` go to the file system of the referenced TIFFs (for example
    S3 credentials); the reference file itself is read from the local disk or the
    URL it names.
    """
    import fsspec

    fs = fsspec.filesystem(
        "reference",
        fo=os.fspath(path),
        remote_options=dict(storage_options or {}),
        skip_instance_cache=True,
    )
    return fs.get_mapper("")


class TiffStoreBackendEntrypoint(BackendEntrypoint):
    """Open a folder, glob or list of TIFF files (or a tiffstore reference file) in xarray.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.open_dataset("raw/", engine="tiffstore", chunks={})  # doctest: +SKIP
    >>> ds.image.sel(ch=1).max("z")  # doctest: +SKIP
    >>> ds = xr.open_dataset("raw/", engine="tiffstore", store_chunks="page")  # doctest: +SKIP
    """

    description = "Open folders of microscope TIFF files as one lazily read Dataset (tiffstore)"
    url = "https://pypi.org/project/tiffstore/"
    open_dataset_parameters = (
        "filename_or_obj",
        "drop_variables",
        *_DECODERS,
        "pattern",
        "store_chunks",
        "fill_value",
        "storage_options",
        "validate",
        "checksum",
        "tiles",
    )

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        mask_and_scale: bool = True,
        decode_times: bool = True,
        concat_characters: bool = True,
        decode_coords: bool = True,
        use_cftime: bool | None = None,
        decode_timedelta: bool | None = None,
        pattern: str | None = None,
        store_chunks: ChunkSpec = None,
        fill_value: int | float | None = None,
        storage_options: dict[str, Any] | None = None,
        validate: bool = False,
        checksum: bool = False,
        tiles: str = "keep",
    ) -> Any:
        """Open ``filename_or_obj`` as a Dataset.

        Parameters
        ----------
        filename_or_obj
            A folder, glob, TIFF file or list of them (anything :func:`tiffstore.open`
            takes), a :class:`TiffStore`, or a reference file tiffstore wrote.
        drop_variables, mask_and_scale, decode_times, concat_characters, decode_coords, use_cftime, decode_timedelta
            As for xarray's Zarr backend.
        pattern, fill_value, storage_options, validate, checksum, tiles
            As for :func:`tiffstore.open`.
        store_chunks
            The store's chunks, :func:`tiffstore.open`'s ``chunks`` (``"page"``,
            ``"file"``, ``"native"``, an int, a shape); named so because xarray's own
            ``chunks=`` sets the dask chunks (``chunks={}`` keeps the store's).

        Returns
        -------
        xarray.Dataset
            The pixels as one data variable (``image``) with the coordinates.
        """
        decoders: dict[str, Any] = {
            "mask_and_scale": mask_and_scale,
            "decode_times": decode_times,
            "concat_characters": concat_characters,
            "decode_coords": decode_coords,
            "use_cftime": use_cftime,
            "decode_timedelta": decode_timedelta,
        }
        store: Any
        if isinstance(filename_or_obj, TiffStore):
            store = filename_or_obj
        elif is_reference_file(filename_or_obj):
            store = open_reference_mapper(filename_or_obj, storage_options)
        else:
            from .api import open as open_store

            source = filename_or_obj
            if isinstance(source, os.PathLike):
                source = os.fspath(source)
            store = open_store(
                source,
                pattern=pattern,
                chunks=store_chunks,
                fill_value=fill_value,
                storage_options=storage_options,
                validate=validate,
                checksum=checksum,
                tiles=tiles,
            )
        if isinstance(store, TiffStore) and store.zarr_format == 3:
            # Format 3: the root is the array; the group view is under ``group/`` and
            # zarr reads its consolidated metadata from there.
            return ZarrBackendEntrypoint().open_dataset(
                store,  # type: ignore[arg-type]  # xarray takes any zarr store
                group=GROUP_V3,
                drop_variables=drop_variables,
                consolidated=False,
                zarr_format=3,
                **decoders,
            )
        return ZarrBackendEntrypoint().open_dataset(
            store,
            drop_variables=drop_variables,
            consolidated=True,
            zarr_format=2,
            **decoders,
        )

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """Whether this backend opens ``filename_or_obj`` (see :mod:`tiffstore.detect`)."""
        if isinstance(filename_or_obj, TiffStore):
            return True
        return is_tiff_source(filename_or_obj) or is_reference_file(filename_or_obj)
