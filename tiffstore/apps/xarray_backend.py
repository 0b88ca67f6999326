"""An xarray backend: ``xr.open_dataset("raw/", engine="tiffstore", chunks={})``.

Registered through the ``xarray.backends`` entry point. It opens the TIFF files as a
:class:`~tiffstore.read.store.TiffStore` and hands the store's group view to xarray's own
Zarr backend, so the Dataset is exactly what ``xr.open_zarr(store)`` gives: named
dims, the coordinates found in the names (wavelength on ``ch``, timestamps over
``ch``/``stack``) and every coordinate the store describes, read lazily (with dask
when ``chunks=`` is given; ``chunks={}`` keeps the store's chunks).

A reference file tiffstore wrote (``*.json``, or a ``*.parq`` folder) is opened
the same way, from the manifest it carries, so its reads are checked as the live
store's are (files replaced since, ``checksum=``). Every option of
:func:`tiffstore.open` is an ``open_dataset`` keyword (``chunks`` is called
``store_chunks``: xarray's own ``chunks=`` sets the dask chunks), or give them all
as ``options=``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from xarray.backends import BackendEntrypoint
from xarray.backends.zarr import ZarrBackendEntrypoint

from tiffstore.detect import is_tiff_source, is_tiffstore_reference
from tiffstore.manifest.documents import GROUP_V3
from tiffstore.opening import open as open_store
from tiffstore.options import OPTION_NAMES, OpenOptions
from tiffstore.read.store import TiffStore

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["TiffStoreBackendEntrypoint"]

#: ``open_dataset`` keywords that are tiffstore's open options (``store_chunks`` is
#: ``chunks``: xarray keeps ``chunks=`` for the dask chunks).
_OPEN_KEYWORDS = tuple("store_chunks" if n == "chunks" else n for n in OPTION_NAMES)

_DECODERS = (
    "mask_and_scale",
    "decode_times",
    "concat_characters",
    "decode_coords",
    "use_cftime",
    "decode_timedelta",
)


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
        "options",
        *_OPEN_KEYWORDS,
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
        options: OpenOptions | None = None,
        **open_options: Any,
    ) -> xr.Dataset:
        """Open ``filename_or_obj`` as a Dataset.

        Parameters
        ----------
        filename_or_obj
            A folder, glob, TIFF file or list of them (anything :func:`tiffstore.open`
            takes), a reference file tiffstore wrote, or a :class:`TiffStore`.
        drop_variables, mask_and_scale, decode_times, concat_characters, decode_coords, use_cftime, decode_timedelta
            As for xarray's Zarr backend.
        options
            An :class:`~tiffstore.options.OpenOptions`.
        **open_options
            The fields of :class:`~tiffstore.options.OpenOptions` (``pattern``,
            ``fill_value``, ``storage_options``, ``validate``, ``checksum``, ``tiles``,
            ``recursive``, ``include``, ``exclude``, ``scale``, ``zarr_format``,
            ``sharded``, ``remote``, ``kvikio``), changing ``options``; the store's chunks
            are ``store_chunks`` (``"page"``, ``"file"``, ``"native"``, an int, a
            shape), because xarray's own ``chunks=`` sets the dask chunks
            (``chunks={}`` keeps the store's).

        Returns
        -------
        xarray.Dataset
            The pixels as one data variable (``image``) with the coordinates; with
            ``chunks={}`` every variable is chunked as the image is along its dims.
        """
        decoders: dict[str, Any] = {
            "mask_and_scale": mask_and_scale,
            "decode_times": decode_times,
            "concat_characters": concat_characters,
            "decode_coords": decode_coords,
            "use_cftime": use_cftime,
            "decode_timedelta": decode_timedelta,
        }
        if "store_chunks" in open_options:
            open_options["chunks"] = open_options.pop("store_chunks")
        elif "chunks" in open_options:  # pragma: no cover - xarray takes chunks= itself
            raise TypeError("store_chunks= sets the store's chunks; chunks= is xarray's")
        store: TiffStore
        if isinstance(filename_or_obj, TiffStore):
            OpenOptions.of(options, **open_options).refuse(
                OPTION_NAMES, "a store that is open already", {}
            )
            store = filename_or_obj
        else:
            source = filename_or_obj
            if isinstance(source, os.PathLike):
                source = os.fspath(source)
            store = open_store(source, options, **open_options)
        if store.zarr_format == 3:
            # Format 3: the root is the array; the group view is under ``group/`` and
            # zarr reads its consolidated metadata from there.
            ds = ZarrBackendEntrypoint().open_dataset(
                store,  # type: ignore[arg-type]  # xarray takes any zarr store
                group=GROUP_V3,
                drop_variables=drop_variables,
                consolidated=False,
                zarr_format=3,
                **decoders,
            )
        else:
            ds = ZarrBackendEntrypoint().open_dataset(
                store,  # type: ignore[arg-type]  # xarray takes any zarr store
                drop_variables=drop_variables,
                consolidated=True,
                zarr_format=2,
                **decoders,
            )
        # The coordinates are stored as one chunk each; chunked by xarray (chunks={})
        # along the image's chunks, so that ``ds.image.chunksizes`` is consistent.
        image_chunks: dict[str, int] = dict(zip(store.dims, store.chunks, strict=True))
        for variable in ds.variables.values():
            variable.encoding["preferred_chunks"] = {
                d: image_chunks.get(str(d), n)
                for d, n in zip(variable.dims, variable.shape, strict=True)
            }
        return ds

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """Whether this backend opens ``filename_or_obj`` (see :mod:`tiffstore.detect`)."""
        if isinstance(filename_or_obj, TiffStore):
            return True
        return is_tiff_source(filename_or_obj) or is_tiffstore_reference(filename_or_obj)
