"""The saved manifest's schema: every field checked before a manifest is built from it.

A saved manifest (:mod:`tiffstore.manifest.saved`) comes back from a file that anyone
may have edited, combined with others or damaged. :func:`check_saved` checks its JSON
document and its arrays against what a :class:`~tiffstore.manifest.model.Manifest`
needs: every key present with its type, sizes positive, every array of its length and
of integer (or boolean) kind, every index inside what it indexes, every file's rows
inside the tables. A manifest built from what passes plans reads inside its own
tables, so a damaged field is named here, as a :class:`~tiffstore.errors.SourceError`,
never met later as an ``IndexError`` in a read.

The checks are explicit code rather than a schema library: a few passes over the
document's lists and numpy reductions over the arrays, a few milliseconds for
100,000 files, at every open of a reference file.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from tiffstore.errors import SourceError

__all__ = ["check_saved"]

_AXIS_KINDS = ("channel", "time", "space", "other")
_STORAGES = ("contiguous", "pages", "segments", "tifffile")
#: Numpy kinds a pixel dtype may be: bool, integers, floats, complex.
_PIXEL_KINDS = "biufc"
#: No file holds a byte past this (as ``tiff/header.py`` refuses larger offsets).
_MAX_OFFSET = 1 << 62
#: Integers past this (in magnitude) fit no int64, which numpy makes of them.
_INT64 = 2**63
#: Types of a coordinate's values (JSON scalars), and of a name axis' values.
_SCALARS: frozenset[type] = frozenset({type(None), bool, int, float, str})
_AXIS_VALUES: frozenset[type] = frozenset({int, str})


def _damaged(where: str, problem: str) -> SourceError:
    """The error for one field of a saved manifest that is missing or wrong."""
    return SourceError(f"the saved tiffstore manifest is damaged: {where} {problem}.")


def _field(rec: Mapping[str, Any], key: str, where: str) -> Any:
    try:
        return rec[key]
    except KeyError:
        raise _damaged(f"{where}.{key}" if where else key, "is missing") from None


def _dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _damaged(where, f"is {type(value).__name__}, not an object")
    return value


def _list(value: Any, where: str, length: int | None = None, nonempty: bool = False) -> list[Any]:
    if not isinstance(value, list):
        raise _damaged(where, f"is {type(value).__name__}, not a list")
    if length is not None and len(value) != length:
        raise _damaged(where, f"has {len(value)} entries, not {length}")
    if nonempty and not value:
        raise _damaged(where, "is empty")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _damaged(where, f"is {type(value).__name__}, not a string")
    return value


def _optional_str(value: Any, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _damaged(where, f"is {type(value).__name__}, not true or false")
    return value


def _int(value: Any, where: str, minimum: int = -_INT64, maximum: int = _INT64 - 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _damaged(where, f"is {type(value).__name__}, not an integer")
    if value < minimum:
        raise _damaged(where, f"is {value}, less than {minimum}")
    if value > maximum:
        raise _damaged(where, f"is {value}, more than {maximum}")
    return value


def _values(value: Any, where: str, types: frozenset[type], nonempty: bool = False) -> list[Any]:
    """A list of values of ``types``, its integers in numpy's int64 (they become arrays)."""
    values = _list(value, where, nonempty=nonempty)
    found = set(map(type, values))
    if not found <= types:
        kinds = ", ".join(sorted(t.__name__ for t in found - types))
        raise _damaged(where, f"holds values of type {kinds}")
    if int in found:
        ints = values if found == {int} else [v for v in values if type(v) is int]
        try:
            np.fromiter(ints, np.int64, len(ints))  # (one pass in C, 1 ms for 100,000)
        except OverflowError:
            raise _damaged(where, "holds an integer past 64 bits") from None
    return values


def _ints(value: Any, where: str, minimum: int, length: int | None = None) -> tuple[int, ...]:
    items = _list(value, where, length)
    return tuple(_int(v, f"{where}[{k}]", minimum) for k, v in enumerate(items))


def _names(value: Any, where: str, length: int | None = None) -> tuple[str, ...]:
    """A list of distinct, non-empty strings."""
    items = _list(value, where, length)
    names = tuple(_str(v, f"{where}[{k}]") for k, v in enumerate(items))
    if "" in names:
        raise _damaged(where, "holds an empty name")
    if len(set(names)) != len(names):
        raise _damaged(where, f"names one thing twice ({list(names)})")
    return names


def _one_of(value: Any, where: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise _damaged(where, f"is {value!r}, not one of {', '.join(allowed)}")
    return str(value)


class _Layout:
    """What the rest of the checks need of one saved layout record."""

    def __init__(self, rec: Any, where: str) -> None:
        rec = _dict(rec, where)
        self.shape = _ints(_field(rec, "shape", where), f"{where}.shape", 1)
        if not self.shape:
            raise _damaged(f"{where}.shape", "is empty")
        text = _str(_field(rec, "dtype", where), f"{where}.dtype")
        try:
            dtype = np.dtype(text)
        except (TypeError, ValueError):
            raise _damaged(f"{where}.dtype", f"{text!r} is not a numpy dtype") from None
        if dtype.kind not in _PIXEL_KINDS or dtype.fields is not None or dtype.subdtype:
            raise _damaged(f"{where}.dtype", f"{text!r} is not a dtype of pixels")
        self.dtype = dtype
        self.dims = _names(_field(rec, "dims", where), f"{where}.dims", len(self.shape))
        ndim = len(self.shape)
        self.page_ndim = _int(_field(rec, "page_ndim", where), f"{where}.page_ndim", 1, ndim)
        self.storage = _one_of(_field(rec, "storage", where), f"{where}.storage", _STORAGES)
        self.samples = _int(_field(rec, "samples", where), f"{where}.samples", 1)
        page_ifds = _field(rec, "page_ifds", where)
        if page_ifds is not None and page_ifds != []:
            raise _damaged(f"{where}.page_ifds", "is neither null nor an empty list")
        self.by_page = page_ifds is not None
        _scale(_field(rec, "scale", where), f"{where}.scale")
        self.n_pages = math.prod(self.shape[: ndim - self.page_ndim])
        segments = _field(rec, "segments", where)
        self.per_page = None if segments is None else self._segments(segments, f"{where}.segments")
        if self.storage == "segments" and self.per_page is None:
            raise _damaged(f"{where}.segments", "is null, but the storage is 'segments'")

    def _segments(self, value: Any, where: str) -> int:
        seg = _dict(value, where)
        per_page = _int(_field(seg, "per_page", where), f"{where}.per_page", 1)
        image = _ints(_field(seg, "image", where), f"{where}.image", 1, 2)
        segment = _ints(_field(seg, "segment", where), f"{where}.segment", 1, 2)
        samples = _int(_field(seg, "samples", where), f"{where}.samples", 1)
        planar = _bool(_field(seg, "planar", where), f"{where}.planar")
        _bool(seg.get("tiled", False), f"{where}.tiled")
        codec = _dict(_field(seg, "codec", where), f"{where}.codec")
        pairs = _list(_field(codec, "compressor", f"{where}.codec"), f"{where}.codec.compressor")
        for k, pair in enumerate(pairs):
            _str(
                _list(pair, f"{where}.codec.compressor[{k}]", 2)[0],
                f"{where}.codec.compressor[{k}][0]",
            )
        _optional_str(_field(codec, "predictor", f"{where}.codec"), f"{where}.codec.predictor")
        _int(_field(codec, "predictor_dist", f"{where}.codec"), f"{where}.codec.predictor_dist", 1)
        _bool(_field(codec, "image", f"{where}.codec"), f"{where}.codec.image")
        if samples != self.samples or (planar and samples == 1):
            raise _damaged(
                where, f"say {samples} samples (planar {planar}), the file {self.samples}"
            )
        grid = math.prod(-(-i // s) for i, s in zip(image, segment, strict=True))
        if per_page != (samples if planar else 1) * grid:
            raise _damaged(
                f"{where}.per_page", f"is {per_page}, but {image} in {segment} makes {grid}"
            )
        page = self.shape[len(self.shape) - self.page_ndim :]
        expected = image if samples == 1 else (samples, *image) if planar else (*image, samples)
        if self.storage == "segments" and page != expected:
            raise _damaged(where, f"describe pages of {expected}, the file pages of {page}")
        return per_page

    @property
    def rows(self) -> int:
        """Table rows of each file of this layout (0: it has none)."""
        if self.storage == "pages" or (self.storage == "tifffile" and self.by_page):
            return self.n_pages
        if self.storage == "segments":
            assert self.per_page is not None
            return self.n_pages * self.per_page
        return 0

    def array(self) -> tuple[Any, ...]:
        return (self.shape, self.dtype, self.dims, self.page_ndim, self.samples)


def _scale(value: Any, where: str) -> None:
    if value is None:
        return
    for dim, size in _dict(value, where).items():
        _one_of(dim, f"{where} key", ("z", "y", "x"))
        pair = _list(size, f"{where}.{dim}", 2)
        if not isinstance(pair[0], (int, float)) or isinstance(pair[0], bool):
            raise _damaged(f"{where}.{dim}[0]", f"is {type(pair[0]).__name__}, not a number")
        _str(pair[1], f"{where}.{dim}[1]")


def _fill_value(value: Any, dtype: np.dtype[Any]) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if dtype.kind == "b":
        fits = isinstance(value, bool) or (number and value in (0, 1))
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        fits = isinstance(value, int) and number and int(info.min) <= value <= int(info.max)
    else:
        fits = number
    if not fits:
        raise _damaged("fill_value", f"{value!r} is not a value of the files' dtype {dtype}")


def _axes(value: Any) -> list[tuple[str, int]]:
    """The name axes' names and sizes."""
    out = []
    for k, rec in enumerate(_list(value, "name_axes")):
        where = f"name_axes[{k}]"
        rec = _dict(rec, where)
        name = _str(_field(rec, "name", where), f"{where}.name")
        _one_of(_field(rec, "kind", where), f"{where}.kind", _AXIS_KINDS)
        values = _values(_field(rec, "values", where), f"{where}.values", _AXIS_VALUES, True)
        _optional_str(_field(rec, "label", where), f"{where}.label")
        _optional_str(_field(rec, "units", where), f"{where}.units")
        out.append((name, len(values)))
    return out


def _coords(value: Any, sizes: Mapping[str, int]) -> None:
    for k, rec in enumerate(_list(value, "coords")):
        where = f"coords[{k}]"
        rec = _dict(rec, where)
        _str(_field(rec, "name", where), f"{where}.name")
        dims = _names(_field(rec, "dims", where), f"{where}.dims")
        if not set(dims) <= set(sizes):
            raise _damaged(f"{where}.dims", f"{list(dims)} are not all name axes {list(sizes)}")
        values = _values(_field(rec, "values", where), f"{where}.values", _SCALARS)
        n = math.prod(sizes[d] for d in dims)
        if len(values) != n:
            raise _damaged(f"{where}.values", f"has {len(values)} values, not {n}")
        _optional_str(_field(rec, "units", where), f"{where}.units")


def _array(
    arrays: Mapping[str, np.ndarray],
    name: str,
    shape: tuple[int, ...],
    minimum: int | None = None,
    below: int | None = None,
) -> np.ndarray:
    """Array ``name``, of integers in ``[minimum, below)`` (as int64) and of ``shape``."""
    try:
        a = arrays[name]
    except KeyError:
        raise _damaged(f"the array {name}", "is missing") from None
    if a.shape != shape:
        raise _damaged(f"the array {name}", f"has shape {a.shape}, not {shape}")
    if a.dtype.kind not in "iu":
        raise _damaged(f"the array {name}", f"holds {a.dtype}, not integers")
    if a.dtype.kind == "u":
        a = a.astype(np.int64)  # (a uint64 past int64's range turns negative: refused below)
    if a.size and minimum is not None and int(a.min()) < minimum:
        raise _damaged(f"the array {name}", f"holds {int(a.min())}, less than {minimum}")
    if a.size and below is not None and int(a.max()) >= below:
        raise _damaged(f"the array {name}", f"holds {int(a.max())}, {below} or more")
    return a


def check_saved(doc: Any, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check a saved manifest's document and arrays; the arrays as a manifest holds them.

    Parameters
    ----------
    doc
        The saved JSON document (``format`` already checked).
    arrays
        The saved arrays by name.

    Returns
    -------
    dict of str to numpy.ndarray
        ``arrays``, unsigned integers as ``int64``.

    Raises
    ------
    SourceError
        Naming the first field that is missing, of the wrong type or size, or out of
        range (``the saved tiffstore manifest is damaged: layouts[0].shape[1] is -3, less
        than 1.``).

    Examples
    --------
    >>> check_saved({"format": 1}, {})  # doctest: +SKIP
    SourceError: the saved tiffstore manifest is damaged: source is missing.
    """
    doc = _dict(doc, "the document")
    source = _dict(_field(doc, "source", ""), "source")
    _one_of(_field(source, "kind", "source"), "source.kind", ("local", "fsspec"))
    root = _str(_field(source, "root", "source"), "source.root")
    if not root or "\0" in root:
        raise _damaged("source.root", f"{root!r} is no folder or URL")
    if "protocol" in source:
        _str(source["protocol"], "source.protocol")
    checksum = source.get("checksum")
    if checksum is not None:
        _int(
            _field(_dict(checksum, "source.checksum"), "block", "source.checksum"),
            "source.checksum.block",
            1,
        )
    files = _list(_field(doc, "files", ""), "files", nonempty=True)
    try:
        "".join(files)  # (refuses anything but strings, in C: 0.4 ms for 100,000 names)
    except TypeError:
        raise _damaged("files", "holds names that are not strings") from None
    n = len(files)
    layouts = [
        _Layout(rec, f"layouts[{k}]")
        for k, rec in enumerate(_list(_field(doc, "layouts", ""), "layouts", nonempty=True))
    ]
    first = layouts[0]
    for k, lay in enumerate(layouts[1:], 1):
        if lay.array() != first.array():
            raise _damaged(f"layouts[{k}]", "describes another array than layouts[0]")
    signatures = _list(_field(doc, "signatures", ""), "signatures")
    for k, text in enumerate(signatures):
        try:
            base64.b64decode(_str(text, f"signatures[{k}]"), validate=True)
        except binascii.Error:
            raise _damaged(f"signatures[{k}]", "is not base64") from None
    axes = _axes(_field(doc, "name_axes", ""))
    sizes = dict(axes)
    if len(sizes) != len(axes):
        raise _damaged("name_axes", "name one axis twice")
    file_dims = _names(_field(doc, "file_dims", ""), "file_dims")
    if file_dims != first.dims or set(file_dims) & set(sizes):
        raise _damaged("file_dims", f"{list(file_dims)} are not the files' dims {list(first.dims)}")
    stitched = _list(_field(doc, "stitched", ""), "stitched")
    folded = set()
    for k, pair in enumerate(stitched):
        pair = _list(pair, f"stitched[{k}]", 2)
        axis = _int(pair[0], f"stitched[{k}][0]", 0, len(axes) - 1)
        _int(pair[1], f"stitched[{k}][1]", 0, len(first.shape) - 1)
        folded.add(axis)
    if len(folded) != len(stitched):
        raise _damaged("stitched", "folds one axis twice")
    ndim = len(axes) - len(folded) + len(first.shape)
    chunks = _ints(_field(doc, "chunks", ""), "chunks", 1, ndim)
    for _, dim in stitched:
        if first.shape[dim] % chunks[ndim - len(first.shape) + dim]:
            raise _damaged("chunks", f"{list(chunks)} straddle the stitched tiles")
    _fill_value(_field(doc, "fill_value", ""), first.dtype)
    _coords(_field(doc, "coords", ""), sizes)
    _str(_field(doc, "template", ""), "template")
    versions = _list(doc.get("file_versions", []), "file_versions")
    if versions and (len(versions) != n or set(map(type, versions)) != {str}):
        raise _damaged("file_versions", f"are not {n} strings")
    grid = tuple(size for _, size in axes)
    return _checked_arrays(arrays, n, layouts, grid, len(signatures), checksum is not None)


def _checked_arrays(
    arrays: Mapping[str, np.ndarray],
    n: int,
    layouts: list[_Layout],
    grid: tuple[int, ...],
    n_signatures: int,
    checksums: bool,
) -> dict[str, np.ndarray]:
    out = dict(arrays)
    one = (n,)
    out["file_sizes"] = _array(arrays, "file_sizes", one, 0)
    out["file_index"] = _array(arrays, "file_index", grid, -1, n)
    out["file_layout"] = file_layout = _array(arrays, "file_layout", one, 0, len(layouts))
    out["file_signature"] = _array(arrays, "file_signature", one, -1, n_signatures)
    verified = arrays.get("verified")
    if verified is None or verified.shape != one or verified.dtype.kind != "b":
        raise _damaged("the array verified", f"is not {n} true or false values")
    if "file_mtimes" in arrays:
        out["file_mtimes"] = _array(arrays, "file_mtimes", one, -1)
    data_offset = out["tables_data_offset"] = _array(
        arrays, "tables_data_offset", one, -1, _MAX_OFFSET
    )
    start = out["tables_start"] = _array(arrays, "tables_start", one, -1)
    offsets = arrays.get("tables_offsets")
    rows = 0 if offsets is None or offsets.ndim != 1 else len(offsets)
    out["tables_offsets"] = _array(arrays, "tables_offsets", (rows,), 0, _MAX_OFFSET)
    out["tables_bytecounts"] = _array(arrays, "tables_bytecounts", (rows,), 0, _MAX_OFFSET)
    for k, lay in enumerate(layouts):
        members = file_layout == k
        if lay.storage == "contiguous":
            if (data_offset[members] < 0).any():
                raise _damaged(
                    "the array tables_data_offset", f"has no offset for a file of layouts[{k}]"
                )
            continue
        first = start[members]
        need = lay.storage in ("pages", "segments") or lay.by_page
        if need and (first < 0).any():
            raise _damaged("the array tables_start", f"has no table row for a file of layouts[{k}]")
        if ((first >= 0) & (first > rows - lay.rows)).any():  # (no sum: it could overflow)
            raise _damaged(
                "the array tables_start",
                f"puts a file of layouts[{k}] past the tables' {rows} rows",
            )
    if checksums:
        out["checksum_starts"] = _array(arrays, "checksum_starts", one, 0)
        crcs = arrays.get("checksum_crcs")
        if crcs is None or crcs.ndim != 1:
            raise _damaged("the array checksum_crcs", "is missing or not a list")
        out["checksum_crcs"] = _array(arrays, "checksum_crcs", crcs.shape, 0, 2**32)
    return out
