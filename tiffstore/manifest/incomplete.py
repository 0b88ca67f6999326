"""Which listed files look still being written: left out of an open, and said once.

A microscope writes an acquisition for hours, and a file it is writing is caught in
one of a few states. It is empty; its header cannot be parsed yet; its header places
pixel data past its end; its size changes while the header is read; or, since
ImageJ and tifffile keep later page directories after the pixel data, it holds fewer
pages than its siblings in fewer bytes (tifffile then logs ``invalid page offset``
and reads another shape, or the same shape with directories missing).

:func:`split_incomplete` finds them from what the header scan read, the listed
sizes and the siblings: files of the array most files hold, which alone decide the
array's shape and dtype. A file that is no TIFF at all, or is broken while as large
as its siblings, is no file being written: its error is raised as before.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tiffstore.errors import FileChangedError, TiffReadError
from tiffstore.manifest.headers import (
    PLAUSIBLE_EXPANSION,
    PLAUSIBLE_FLOOR,
    HeaderScan,
    data_end,
)
from tiffstore.sources.base import FileSource, SourceFile
from tiffstore.sources.files import ListedFiles
from tiffstore.sources.local import LocalSource
from tiffstore.tiff.header import HeaderRead, first_ifd_offset, is_tiff_start, walk_pages
from tiffstore.tiff.layout import FileLayout

__all__ = ["incomplete_warning", "split_incomplete"]

logger = logging.getLogger(__name__)

#: How many files a message names before it counts the rest.
SHOWN = 5

#: At most this many characters of what tifffile said, per file.
NOTES_CHARS = 160


def _reason(read: HeaderRead, url: str) -> str:
    """Why a header could not be read, without the file's name (the message names it)."""
    text = str(read.error or "").removeprefix(f"{url}: ")
    return text.split(" Replace it", 1)[0].rstrip(". ") or "its header is cut short"


def _tifffile_said(notes: Sequence[str]) -> str:
    said = "; ".join(dict.fromkeys(n.split("> ", 1)[-1] for n in notes))
    return said if len(said) <= NOTES_CHARS else said[: NOTES_CHARS - 3] + "..."


def _with_notes(why: str, read: HeaderRead | None) -> str:
    if read is None or not read.notes:
        return why
    return f"{why} (tifffile: {_tifffile_said(read.notes)})"


def _implausible(layout: FileLayout, size: int) -> bool:
    """Whether a header declares an image no file of ``size`` bytes could be (a bomb)."""
    declared = math.prod(layout.shape) * np.dtype(layout.dtype).itemsize
    return declared > max(PLAUSIBLE_FLOOR, PLAUSIBLE_EXPANSION * size)


def _changed(
    source: FileSource, files: Sequence[SourceFile], read: Sequence[int]
) -> dict[int, str]:
    """Local files whose size or time changed between the listing and the header read."""
    if not isinstance(source, LocalSource):
        return {}  # an object store shows an object whole, and versions its reads
    out = {}
    for i in read:
        f = files[i]
        now = source.stamp(f.name)
        if now is None:
            out[i] = "it was removed or renamed after the listing"
        elif now[0] != f.size:
            out[i] = (
                f"its size changed while its header was read ({f.size:,} bytes listed, "
                f"{now[0]:,} now)"
            )
        elif f.mtime_ns is not None and now[1] != f.mtime_ns:
            out[i] = "it was modified while its header was read"
    return out


Key = tuple[Any, ...]


def _key(layout: FileLayout) -> Key:
    return (layout.shape, layout.dtype, layout.dims)


class _Groups:
    """The files judged by their layouts, a group per layout object (files accepted on
    their group's header bytes share one): the work is per group, not per file, for
    listings of 100,000 files."""

    def __init__(self, scan: HeaderScan, sizes: np.ndarray, skip: Mapping[int, str]) -> None:
        members: dict[int, list[int]] = defaultdict(list)
        self.layout: dict[int, FileLayout] = {}
        for i, lay in enumerate(scan.layouts):
            if lay is not None and i not in skip:
                members[id(lay)].append(i)
                self.layout[id(lay)] = lay
        self.members = {k: np.array(v, np.int64) for k, v in members.items()}
        self.end = {k: data_end(lay) for k, lay in self.layout.items()}
        self.sizes = sizes

    def past_end(self, known: frozenset[int]) -> list[int]:
        """Files (not ``known``) whose header places pixel data past their listed end."""
        out: list[int] = []
        for k, idx in self.members.items():
            out.extend(int(i) for i in idx[self.sizes[idx] < self.end[k]] if int(i) not in known)
        return sorted(out)

    def acquisition(self, out: set[int]) -> tuple[Key | None, int]:
        """The array most files (less ``out``) hold (ties: the one in the largest file),
        and the size of the largest file holding it; ``(None, 0)`` when none is left."""
        count: Counter[Key] = Counter()
        largest: dict[Key, int] = defaultdict(int)
        for k, idx in self.members.items():
            sizes = [int(self.sizes[i]) for i in idx if int(i) not in out] if out else None
            kept = len(idx) if sizes is None else len(sizes)
            if not kept:
                continue
            key = _key(self.layout[k])
            count[key] += kept
            top = int(self.sizes[idx].max()) if sizes is None else max(sizes)
            largest[key] = max(largest[key], top)
        if not count:
            return None, 0
        key = max(count, key=lambda k: (count[k], largest[k]))
        return key, largest[key]


def _lost_pages(
    source: FileSource,
    files: Sequence[SourceFile],
    groups: _Groups,
    key: Key | None,
    skip: set[int],
) -> dict[int, str]:
    """Files of the acquisition, stored as one block of pixels, with less after the block
    than their siblings: whose page directories kept there tifffile cannot all walk."""
    tails: dict[int, np.ndarray] = {}
    for k, idx in groups.members.items():
        lay = groups.layout[k]
        if lay.storage == "contiguous" and _key(lay) == key:
            tails[k] = groups.sizes[idx] - groups.end[k]
    if not tails:
        return {}
    longest = max(int(t.max()) for t in tails.values())
    out = {}
    for k, tail in tails.items():
        for i, t in zip(
            groups.members[k][tail < longest].tolist(), tail[tail < longest].tolist(), strict=True
        ):
            if i in skip:
                continue
            try:
                with source.open(files[i].name) as fh:
                    notes = walk_pages(fh)
            except FileChangedError:
                notes = ("the file changed while its pages were read",)
            if notes:
                out[i] = (
                    f"its page directories after the pixel data are cut short ({files[i].size:,} "
                    f"bytes where its siblings hold up to {files[i].size + longest - t:,}; "
                    f"tifffile: {_tifffile_said(notes)})"
                )
    return out


def split_incomplete(
    source: FileSource, files: Sequence[SourceFile], scan: HeaderScan, *, validate: bool = False
) -> dict[int, str]:
    """The files that look still being written: file number -> why, in words.

    Parameters
    ----------
    source, files
        The listing: the files' reader, names and listed sizes.
    scan
        What :func:`tiffstore.manifest.headers.scan_headers` read of them.
    validate
        Refuse such files instead of naming them.

    Files of ``scan.known`` (layouts read before, given to the scan) are not judged
    again; they count as siblings.

    Raises
    ------
    TiffReadError
        A file that is broken rather than being written (not a TIFF, a corrupt header
        in a file as large as its siblings); with ``validate=True``, any file that looks
        still being written; and when every file does.
    """
    n = len(files)
    sizes = ListedFiles.of(files).sizes
    known = scan.known
    read_now = np.flatnonzero(scan.verified).tolist() + list(scan.reads)
    changed = _changed(source, files, sorted(set(read_now) - known))
    why: dict[int, str] = {i: _with_notes(w, scan.reads.get(i)) for i, w in changed.items()}
    for i in np.flatnonzero(sizes == 0).tolist():
        why.setdefault(i, "it is empty (0 bytes)")
    failed: list[int] = []
    for i, read in scan.reads.items():
        if i in why or read.layout is not None:
            continue
        if read.cut:
            why[i] = _with_notes(_reason(read, source.url(files[i].name)), read)
        else:
            failed.append(i)
    groups = _Groups(scan, sizes, why)
    past_end = groups.past_end(known)
    key, size = groups.acquisition(set(past_end))
    for i in past_end:
        lay = scan.layouts[i]
        assert lay is not None
        if _implausible(lay, files[i].size) and files[i].size >= size:
            continue  # no sibling says a larger file is coming: check_plausible names it
        why[i] = _with_notes(
            f"its header points past the end of the file (pixel data up to byte "
            f"{data_end(lay):,}, the file holds {files[i].size:,} bytes)",
            scan.reads.get(i),
        )
    for i, read in scan.reads.items():
        lay = read.layout
        if i in why or i in known or lay is None or not read.notes or files[i].size >= size:
            continue
        if _key(lay) == key:
            why[i] = _with_notes(
                f"it is cut short: {files[i].size:,} bytes where its siblings hold up to {size:,}",
                read,
            )
        else:
            # tifffile found the directories after the data missing and fell back on
            # the pages it could read: another shape, from a file cut short.
            why[i] = _with_notes(
                f"it is cut short inside its pixel data: tifffile reads "
                f"{_describe(_key(lay))} in {files[i].size:,} bytes, "
                f"where its siblings hold {_describe(key)} in up to {size:,}",
                read,
            )
    skip = set(why) | set(scan.reads) | set(past_end) | known
    why.update(_lost_pages(source, files, groups, key, skip))
    for i in failed:
        read = scan.reads[i]
        f = files[i]
        try:
            head = source.read_header(f.name, min(16, f.size))
        except FileChangedError:
            why[i] = _with_notes("it changed while its header was read", read)
            continue
        first = first_ifd_offset(head)
        if is_tiff_start(head) and (len(head) < 8 or (first or 0) >= f.size or f.size < size):
            why[i] = _with_notes(
                f"its header cannot be read yet: {_reason(read, source.url(f.name))}", read
            )
    for i in sorted(failed):
        if i not in why:
            error = scan.reads[i].error
            assert error is not None
            raise error
    if why and (validate or len(why) == n):
        raise TiffReadError(_refusal(source, files, why, everyone=len(why) == n))
    return dict(sorted(why.items()))


def _describe(key: tuple[Any, ...] | None) -> str:
    assert key is not None
    shape, dtype, dims = key
    return (
        "("
        + ", ".join(f"{d}={s}" for d, s in zip(dims, shape, strict=True))
        + f") {np.dtype(dtype).name}"
    )


def _lines(source: FileSource, files: Sequence[SourceFile], why: Mapping[int, str]) -> str:
    shown = [f"  {source.url(files[i].name)}: {w}" for i, w in list(why.items())[:10]]
    more = f"\n  ... and {len(why) - 10} more" if len(why) > 10 else ""
    return "\n".join(shown) + more


def _refusal(
    source: FileSource, files: Sequence[SourceFile], why: Mapping[int, str], everyone: bool
) -> str:
    k = len(why)
    if everyone:
        return (
            f"{'The one file' if k == 1 else f'Every one of the {k} files'} looks still being "
            "written (or was cut short), so there is no array to open yet:\n"
            + _lines(source, files, why)
            + "\nOpen again once a file is complete; check that these are the TIFF files "
            "you meant."
        )
    return (
        f"{k} file{'s look' if k > 1 else ' looks'} still being written (or cut short: "
        "truncated):\n"
        + _lines(source, files, why)
        + f"\nvalidate=True refuses {'them' if k > 1 else 'it'}. Open without validate=True "
        f"to leave {'them' if k > 1 else 'it'} out (their cells then read as the fill value), "
        f"or leave {'them' if k > 1 else 'it'} out with exclude=..., or replace "
        f"{'them' if k > 1 else 'it'}."
    )


def incomplete_warning(incomplete: Mapping[str, str]) -> str:
    """The one warning naming the files left out as still being written (a few, and a count).

    ``incomplete`` maps each name to why it looks still being written.
    """
    k = len(incomplete)
    shown = "; ".join(f"{name}: {why}" for name, why in list(incomplete.items())[:SHOWN])
    more = f"; ... and {k - SHOWN} more" if k > SHOWN else ""
    return (
        f"Left out {k} file{'s that look' if k > 1 else ' that looks'} still being written "
        f"(listed in store.incomplete; {'their cells read' if k > 1 else 'its cell reads'} as "
        f"the fill value until opened again once complete): {shown}{more}."
    )
