"""The Zarr documents of the virtual array: its metadata, attributes and group view.

The root of a :class:`~tiffstore.read.store.TiffStore` is two things at once:

* a Zarr format 2 **array** (``.zarray``, ``.zattrs``, chunk keys ``"c.s.z.y.x"``),
  for ``zarr.open_array(store)`` and ``dask.array.from_zarr(store)``;
* a Zarr format 2 **group** (``.zgroup``, consolidated ``.zmetadata``) holding the
  same pixels as ``image/`` and one small array per coordinate, for
  ``xarray.open_zarr(store)``, which then shows the coordinates (wavelength per
  channel, timestamps per file) as real xarray coordinates.

Every document is built from the manifest alone; nothing here does I/O.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numcodecs
import numpy as np

from tiffstore._version import __version__
from tiffstore.errors import OptionError
from tiffstore.manifest.model import Manifest, json_value
from tiffstore.names.axes import axis_kind

__all__ = [
    "ARRAY_METADATA",
    "GROUP_METADATA",
    "GROUP_V3",
    "ZARR_JSON",
    "Documents",
    "ShardLayout",
    "array_attributes",
    "array_metadata",
    "array_metadata_v3",
    "shard_layout",
]

ARRAY_METADATA = (".zarray", ".zattrs")
GROUP_METADATA = (".zgroup", ".zmetadata")
#: Zarr format 3: every node's metadata document.
ZARR_JSON = "zarr.json"
#: Zarr format 3: where the group view lives (the root is the array, and a format 3
#: node is an array or a group, never both).
GROUP_V3 = "group"


def _json_bytes(doc: dict[str, Any]) -> bytes:
    # A file name that is not UTF-8 (bytes Python keeps as lone surrogates) is
    # written as a JSON escape ("\udce9"), which reads back as the same name.
    text = json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=True)
    return text.encode("utf-8", "backslashreplace")


def _coordinate_array(values: Any) -> np.ndarray:
    """Coordinate values (nested lists, ``None`` where no file) as a typed array."""
    flat = np.asarray(values, dtype=object)
    items = [v for v in flat.ravel().tolist() if v is not None]
    if items and all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        if len(items) == flat.size:
            return flat.astype(np.int64)
        return np.where(flat == None, np.nan, flat).astype(np.float64)  # noqa: E711
    if items and all(isinstance(v, (int, float)) for v in items):
        return np.where(flat == None, np.nan, flat).astype(np.float64)  # noqa: E711
    text = np.where(flat == None, "", flat).astype(str)  # noqa: E711
    return text.astype(f"<U{max(1, max((len(t) for t in text.ravel()), default=1))}")


def scale_of(m: Manifest) -> dict[str, tuple[float, str]]:
    """What one pixel measures along the files' own ``z``/``y``/``x``: dim -> (size, units)."""
    sizes = m.layout.scale.as_dict() if m.layout.scale else {}
    return {d: v for d, v in sizes.items() if d in m.file_dims}


def _coordinate_metadata(shape: list[int], dtype: str, fill: Any) -> dict[str, Any]:
    return {
        "zarr_format": 2,
        "shape": shape,
        "chunks": [max(1, n) for n in shape],
        "dtype": dtype,
        "compressor": None,
        "fill_value": fill,
        "order": "C",
        "filters": None,
        "dimension_separator": ".",
    }


def array_metadata(m: Manifest) -> dict[str, Any]:
    """The Zarr format 2 ``.zarray`` document."""
    return {
        "zarr_format": 2,
        "shape": list(m.shape),
        "chunks": list(m.chunks),
        "dtype": m.layout.dtype,
        "compressor": None,
        "fill_value": json_value(m.fill_value),
        "order": "C",
        "filters": None,
        "dimension_separator": ".",
    }


def _v3_fill(value: Any) -> Any:
    """A fill value as Zarr format 3 JSON holds it (NaN and infinities as strings)."""
    value = json_value(value)
    if isinstance(value, float) and not np.isfinite(value):
        return "NaN" if np.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _bytes_codec(dtype: np.dtype[Any]) -> dict[str, Any]:
    order = (
        dtype.byteorder if dtype.byteorder != "=" else ("<" if sys.byteorder == "little" else ">")
    )
    return {"name": "bytes", "configuration": {"endian": "big" if order == ">" else "little"}}


@dataclass(frozen=True)
class ShardLayout:
    """How a Zarr format 3 shard (one chunk of the manifest) splits into inner chunks (pages).

    The store serves a shard as a virtual byte string: the chunk's bytes in C order
    (inner chunk ``k`` at ``k * inner_nbytes``, since an inner chunk is whole
    trailing dims), then the index: per inner chunk, in C order, two little-endian
    ``uint64`` ``(offset, nbytes)``, both ``2**64 - 1`` for an inner chunk with no file.
    """

    inner: tuple[int, ...]
    per_shard: tuple[int, ...]
    inner_nbytes: int

    @property
    def count(self) -> int:
        """Inner chunks per shard."""
        return math.prod(self.per_shard)

    @property
    def index_nbytes(self) -> int:
        return 16 * self.count


def shard_layout(m: Manifest) -> ShardLayout | None:
    """The shard layout of ``m``'s chunks, or ``None`` when sharding would not help.

    Sharding applies when a chunk is whole pages (the usual ~16 MiB default) and
    more than one: each page is then an inner chunk, read on its own by a reader
    that wants one plane.
    """
    page = m.layout.page_shape
    k = len(page)
    if m.stitched or not page or m.chunks[len(m.chunks) - k :] != page:
        return None
    outer = m.chunks[: len(m.chunks) - k]
    if math.prod(outer) <= 1:
        return None
    inner = (1,) * len(outer) + page
    return ShardLayout(inner, (*outer, *(1,) * k), math.prod(page) * m.dtype.itemsize)


def array_metadata_v3(
    m: Manifest, attributes: dict[str, Any], shards: ShardLayout | None
) -> dict[str, Any]:
    """The Zarr format 3 ``zarr.json`` document of the array (sharded when ``shards``)."""
    codec = _bytes_codec(m.dtype)
    codecs: list[dict[str, Any]] = [codec]
    if shards is not None:
        # The index has no checksum: the store makes it up on each read, from the manifest.
        codecs = [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": list(shards.inner),
                    "codecs": [codec],
                    "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                    "index_location": "end",
                },
            }
        ]
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(m.shape),
        "data_type": m.dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(m.chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": _v3_fill(m.fill_value),
        "codecs": codecs,
        "attributes": attributes,
        "dimension_names": list(m.dims),
        "storage_transformers": [],
    }


def _coordinate_v3(
    arr: np.ndarray, dims: list[str], attrs: dict[str, Any]
) -> tuple[dict[str, Any], bytes]:
    """A coordinate array's format 3 ``zarr.json`` and the bytes of its single chunk."""
    shape = list(arr.shape)
    codecs: list[dict[str, Any]]
    if arr.dtype.kind == "U":
        # Labels: variable-length UTF-8 strings, the format 3 string type.
        data_type: Any = "string"
        fill: Any = ""
        codecs = [{"name": "vlen-utf8"}]
        data = numcodecs.VLenUTF8().encode(arr.astype(object).ravel())
    else:
        data_type, fill = arr.dtype.name, ("NaN" if arr.dtype.kind == "f" else 0)
        codecs = [_bytes_codec(arr.dtype)]
        data = arr.tobytes()
    doc = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": data_type,
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": [max(1, n) for n in shape]},
        },
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill,
        "codecs": codecs,
        "attributes": attrs,
        "dimension_names": dims,
        "storage_transformers": [],
    }
    return doc, bytes(data)


def array_attributes(
    m: Manifest, max_files: int = 10_000, max_missing: int = 1_000
) -> dict[str, Any]:
    """The ``.zattrs`` document: ``_ARRAY_DIMENSIONS`` and tiffstore's description.

    The ``tiffstore`` entry holds ``axes`` (name, kind, where it comes from,
    size and, for name axes, values), ``coords`` (name -> dims, values, units),
    ``template``, ``source``, ``files`` (names in grid order, ``null`` where
    missing; left out past ``max_files``) and ``missing`` (axis values of empty
    cells; cut at ``max_missing``).
    """
    axes: list[dict[str, Any]] = []
    coords: dict[str, dict[str, Any]] = {}
    for a in m.array_axes:
        values = [json_value(v) for v in a.values]
        axes.append(
            {"name": a.name, "kind": a.kind, "source": "name", "size": a.size, "values": values}
        )
        coords[a.name] = {"dims": [a.name], "values": values}
        if a.units:
            coords[a.name]["units"] = a.units
    nv = m.n_name_dims
    for d, name in enumerate(m.file_dims):
        axes.append(
            {
                "name": name,
                "kind": axis_kind(name),
                "source": "file",
                "size": m.shape[nv + d],
            }
        )
    sizes = {a.name: a.size for a in m.name_axes}
    tile_axes = {m.name_axes[k].name for k, _ in m.stitched}
    tile_coords: dict[str, dict[str, Any]] = {}
    for c in m.coords:
        shape = tuple(sizes[d] for d in c.dims)
        values = c.as_array(shape).tolist() if shape else list(c.values)
        entry: dict[str, Any] = {"dims": list(c.dims), "values": values}
        if c.units:
            entry["units"] = c.units
        # A coordinate over tile axes has no dim of the stitched array to live on.
        (tile_coords if tile_axes & set(c.dims) else coords)[c.name] = entry
    missing = m.missing()
    files: dict[str, Any] = {"count": len(m.files)}
    if len(m.files) <= max_files:
        names = [m.files[i] if i >= 0 else None for i in m.file_index.ravel().tolist()]
        files["names"] = names
    doc: dict[str, Any] = {
        "_ARRAY_DIMENSIONS": list(m.dims),
        "tiffstore": {
            "version": __version__,
            "source": m.source.url(""),
            "template": m.template,
            "axes": axes,
            "coords": coords,
            "files": files,
            "missing_count": len(missing),
            "missing": missing[:max_missing],
        },
    }
    scale = scale_of(m)
    if scale:
        doc["tiffstore"]["scale"] = {
            d: {"size": size, "units": units} for d, (size, units) in scale.items()
        }
    if m.stitched:
        doc["tiffstore"]["tiles"] = [
            {
                "axis": m.name_axes[k].name,
                "into": m.file_dims[d],
                "tile_size": m.layout.shape[d],
                "values": [json_value(v) for v in m.name_axes[k].values],
            }
            for k, d in m.stitched
        ]
        doc["tiffstore"]["tile_coords"] = tile_coords
    return doc


class Documents:
    """Every metadata document of a store over ``manifest``, and its coordinate arrays' bytes.

    Parameters
    ----------
    manifest
        The virtual array.
    zarr_format
        2: ``.zarray``/``.zgroup`` documents at the root. 3: ``zarr.json`` of the
        array at the root, and the group view under ``group/``.
    sharded
        Format 3 only: serve each chunk as a shard of pages (see :func:`shard_layout`)
        when that helps; ``False`` never shards.

    Attributes
    ----------
    image_name
        The name of the pixels in the group view (``image`` unless a dim or
        coordinate takes it).
    shards
        The shard layout of the pixels, or ``None`` when chunks are not sharded.
    """

    def __init__(self, manifest: Manifest, zarr_format: int = 2, sharded: bool = True) -> None:
        if zarr_format not in (2, 3):
            raise OptionError(
                f"zarr_format={zarr_format!r}: tiffstore serves Zarr format 2 or 3; pass 2 or 3."
            )
        self.manifest = manifest
        self.zarr_format = zarr_format
        self.shards = shard_layout(manifest) if zarr_format == 3 and sharded else None
        taken = set(manifest.dims) | {c.name for c in manifest.coords}
        self.image_name = "image" if "image" not in taken else "image_data"

    @property
    def image_prefix(self) -> str:
        """The key prefix of the pixels in the group view."""
        if self.zarr_format == 3:
            return f"{GROUP_V3}/{self.image_name}/"
        return f"{self.image_name}/"

    @cached_property
    def _built(self) -> tuple[dict[str, bytes], dict[str, bytes]]:
        if self.zarr_format == 3:
            return self._built_v3()
        coord_chunks: dict[str, bytes] = {}
        m = self.manifest
        zarray = array_metadata(m)
        zattrs = array_attributes(m)
        # zarr reads a group's attributes from the root .zattrs, which the array view
        # shares: the dims stay on image/.zattrs, out of the group's attributes.
        root_attrs = {k: v for k, v in zattrs.items() if k != "_ARRAY_DIMENSIONS"}
        docs: dict[str, dict[str, Any]] = {".zarray": zarray, ".zattrs": root_attrs}
        consolidated: dict[str, Any] = {".zgroup": {"zarr_format": 2}, ".zattrs": {}}
        coords: dict[str, dict[str, Any]] = zattrs["tiffstore"]["coords"]
        # In the group view, missing cells are served as filled chunks and the array
        # has no fill value, so xarray does not mask real pixels that equal it.
        image_zarray = dict(zarray, fill_value=None)
        image_zattrs = {
            "_ARRAY_DIMENSIONS": zattrs["_ARRAY_DIMENSIONS"],
            "coordinates": " ".join(c for c in coords if c not in m.dims),
        }
        consolidated[f"{self.image_name}/.zarray"] = image_zarray
        consolidated[f"{self.image_name}/.zattrs"] = image_zattrs
        for name, coord in coords.items():
            arr = _coordinate_array(coord["values"])
            shape = list(arr.shape)
            # No fill value for labels: xarray would mask the labels equal to it.
            fill: Any = "NaN" if arr.dtype.kind == "f" else None
            consolidated[f"{name}/.zarray"] = _coordinate_metadata(shape, arr.dtype.str, fill)
            attrs: dict[str, Any] = {"_ARRAY_DIMENSIONS": coord["dims"]}
            if "units" in coord:
                attrs["units"] = coord["units"]
            consolidated[f"{name}/.zattrs"] = attrs
            coord_chunks[f"{name}/" + ".".join("0" * len(shape) or "0")] = arr.tobytes()
        # Physical positions of the pixels, so that xarray shows z/y/x in units.
        for d, (size, units) in scale_of(m).items():
            n = m.shape[m.dims.index(d)]
            consolidated[f"{d}/.zarray"] = _coordinate_metadata([n], "<f8", None)
            consolidated[f"{d}/.zattrs"] = {"_ARRAY_DIMENSIONS": [d], "units": units}
            coord_chunks[f"{d}/0"] = (np.arange(n, dtype="<f8") * size).tobytes()
        docs[".zgroup"] = {"zarr_format": 2}
        docs[".zmetadata"] = {"zarr_consolidated_format": 1, "metadata": consolidated}
        out = {k: _json_bytes(v) for k, v in docs.items()}
        out.update({k: _json_bytes(v) for k, v in consolidated.items() if "/" in k})
        return out, coord_chunks

    def _coordinates(self) -> list[tuple[str, np.ndarray, list[str], dict[str, Any]]]:
        """Each coordinate array of the group view: name, values, dims, attributes."""
        m = self.manifest
        out = []
        for name, coord in array_attributes(m)["tiffstore"]["coords"].items():
            attrs = {"units": coord["units"]} if "units" in coord else {}
            out.append((name, _coordinate_array(coord["values"]), coord["dims"], attrs))
        # Physical positions of the pixels, so that xarray shows z/y/x in units.
        for d, (size, units) in scale_of(m).items():
            n = m.shape[m.dims.index(d)]
            out.append((d, np.arange(n, dtype="<f8") * size, [d], {"units": units}))
        return out

    def _built_v3(self) -> tuple[dict[str, bytes], dict[str, bytes]]:
        m = self.manifest
        attrs = array_attributes(m)
        coords: dict[str, Any] = attrs["tiffstore"]["coords"]
        del attrs["_ARRAY_DIMENSIONS"]  # dimension_names says it in format 3
        docs: dict[str, dict[str, Any]] = {ZARR_JSON: array_metadata_v3(m, attrs, self.shards)}
        # The group view's pixels keep the fill value: unlike format 2's, xarray does
        # not mask it in format 3 (no ``_FillValue`` attribute), so missing cells are
        # absent here too.
        image_attrs = {"coordinates": " ".join(c for c in coords if c not in m.dims)}
        members: dict[str, dict[str, Any]] = {
            self.image_name: array_metadata_v3(m, image_attrs, self.shards)
        }
        coord_chunks: dict[str, bytes] = {}
        for name, arr, dims, coord_attrs in self._coordinates():
            members[name], data = _coordinate_v3(arr, dims, coord_attrs)
            coord_chunks[f"{GROUP_V3}/{name}/c" + "/0" * arr.ndim] = data
        docs[f"{GROUP_V3}/{ZARR_JSON}"] = {
            "zarr_format": 3,
            "node_type": "group",
            "attributes": {},
            "consolidated_metadata": {
                "kind": "inline",
                "must_understand": False,
                "metadata": members,
            },
        }
        for name, doc in members.items():
            docs[f"{GROUP_V3}/{name}/{ZARR_JSON}"] = doc
        return {k: _json_bytes(v) for k, v in docs.items()}, coord_chunks

    @property
    def documents(self) -> dict[str, bytes]:
        """Metadata key -> JSON bytes, for both views."""
        return self._built[0]

    @property
    def coordinate_chunks(self) -> dict[str, bytes]:
        """Key -> bytes of each coordinate array's single chunk."""
        return self._built[1]

    @property
    def scale(self) -> dict[str, tuple[float, str]]:
        """See :func:`scale_of`."""
        return scale_of(self.manifest)

    @property
    def attributes(self) -> dict[str, Any]:
        """The array's attributes (the root ``.zattrs`` document), a fresh copy."""
        if self.zarr_format == 3:
            attrs: dict[str, Any] = json.loads(self.documents[ZARR_JSON])["attributes"]
            return attrs
        attrs = json.loads(self.documents[".zattrs"])
        return attrs
