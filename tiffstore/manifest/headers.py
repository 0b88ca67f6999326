"""Reading and checking the files' TIFF headers: all header I/O lives here.

At open, :func:`scan_headers` parses one header per group of same-size files and
compares the header bytes of a sample of each group with it; with
``validate=True`` it parses every header. A file accepted on its group's word is
checked on its first read (:func:`check_file`), or all at once by
:func:`verify_manifest`.

A header that cannot be read does not raise here: files still being written are
left out, not failed on, by :func:`tiffstore.manifest.incomplete.split_incomplete`
(empty, a header tifffile cannot parse yet, data ending before the header's last
offset, a size that changed while the header was read, or fewer pages than their
siblings in a smaller file). The contract of the open's header stage is::

    opening.read_headers(listing, grid, options, progress=None, known=None)
        -> (manifest, incomplete)

``incomplete`` is a ``tuple[str, ...]`` of the listing's names left out as still
being written (their grid cells read as the fill value; they are not in
``manifest.files``); ``known`` optionally maps names to the
:class:`~tiffstore.tiff.layout.FileLayout` of headers read before, which are then
not read again (nor judged: they count as siblings).
``make_store(manifest, options, left_out, incomplete=...)`` records them as
``store.incomplete``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiffstore.errors import FileChangedError, LayoutMismatchError, TiffReadError
from tiffstore.manifest.model import Manifest
from tiffstore.manifest.tables import columnize
from tiffstore.sources.base import FileSource, SourceFile
from tiffstore.sources.files import ListedFiles
from tiffstore.tiff.header import HeaderRead, read_header, read_layout
from tiffstore.tiff.layout import FileLayout

__all__ = [
    "HeaderScan",
    "check_file",
    "check_truncated",
    "data_end",
    "scan_headers",
    "verify_manifest",
]

logger = logging.getLogger(__name__)

#: Uniform files whose pixel data starts within this many bytes are checked by
#: comparing their header bytes to a parsed reference rather than parsing each.
MAX_SIGNATURE_BYTES = 64 * 2**10


@dataclass
class HeaderScan:
    """What :func:`scan_headers` found.

    ``layouts[i]`` is file ``i``'s layout (``None`` where its header cannot be read);
    files accepted on their group's header bytes share one object.
    ``file_signature[i]`` numbers the group's header bytes in ``signatures`` (-1
    where the file's own header was parsed). ``reads`` holds, for files whose header
    failed or made tifffile log something, what the parse said; ``known`` the files
    whose layout was given (read before), not read now.
    """

    layouts: list[FileLayout | None]
    signatures: list[bytes]
    file_signature: np.ndarray
    verified: np.ndarray
    reads: dict[int, HeaderRead] = dataclasses.field(default_factory=dict)
    known: frozenset[int] = frozenset()

    def subset(self, keep: Sequence[int]) -> HeaderScan:
        """The scan of the files ``keep`` (in that order) only."""
        index = np.asarray(keep, np.int64)
        renumber = {old: new for new, old in enumerate(keep)}
        return HeaderScan(
            [self.layouts[i] for i in keep],
            self.signatures,
            self.file_signature[index],
            self.verified[index],
            {renumber[i]: r for i, r in self.reads.items() if i in renumber},
            frozenset(renumber[i] for i in self.known if i in renumber),
        )


Progress = Callable[[int], None]


class _Counter:
    """Counts files done, for a progress display, from any thread."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.done = 0
        self.lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        if self.progress is None:
            return
        with self.lock:
            self.done += n
            done = self.done
        self.progress(done)


def _parse_all(
    source: FileSource, names: Sequence[str], workers: int, counter: _Counter | None = None
) -> list[HeaderRead]:
    def parse(name: str) -> HeaderRead:
        try:
            with source.open(name) as fh:
                read = read_header(fh, source.url(name))
        except TiffReadError as exc:
            if not isinstance(exc, FileChangedError) and not isinstance(
                exc.__cause__, FileNotFoundError
            ):
                raise
            # Listed, then gone or replaced before its header was read: a writer is at it.
            read = HeaderRead(None, exc, cut=True)
        if counter is not None:
            counter.add()
        return read

    if len(names) == 1 or workers <= 1:
        return [parse(n) for n in names]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(parse, names))


def _heads(source: FileSource, names: Sequence[str], n: int, workers: int) -> list[bytes]:
    def head(name: str) -> bytes:
        return source.read_header(name, n)

    if len(names) <= 2 or workers <= 1:
        return [head(name) for name in names]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(head, names))


def data_end(layout: FileLayout) -> int:
    """The byte just past a file's last pixel data, by its header (0 when only tifffile
    knows: pages it decodes itself)."""
    if layout.storage == "contiguous" and layout.data_offset is not None:
        return layout.data_offset + layout.n_pages * layout.page_nbytes
    if layout.storage == "pages" and layout.page_offsets:
        return max(layout.page_offsets) + layout.page_nbytes
    if layout.storage == "segments" and layout.segments is not None:
        seg = layout.segments
        return int((seg.offsets + seg.bytecounts).max(initial=0))
    return 0


def _sound(read: HeaderRead, size: int) -> bool:
    """Whether a group's reference header can speak for its same-size members."""
    return read.layout is not None and not read.notes and data_end(read.layout) <= size


def scan_headers(
    source: FileSource,
    files: Sequence[SourceFile],
    validate: bool,
    workers: int,
    progress: Progress | None = None,
    known: Mapping[str, FileLayout] | None = None,
) -> HeaderScan:
    """Find every file's layout, parsing one header per group of same-size files.

    Files of one size whose header bytes (everything before the pixel data) match
    a parsed reference share its layout; a few of each group are compared at open
    and the rest on their first read. ``validate=True`` parses every header. Files
    named in ``known`` take the layout given there, unread. A header that cannot be
    read does not raise here: its file's layout is ``None`` and ``reads`` says why
    (:func:`tiffstore.manifest.incomplete.split_incomplete` judges it).
    """
    known = known or {}
    listed = ListedFiles.of(files)  # its columns: no record per file
    by_size: dict[int, list[int]] = defaultdict(list)
    layouts: list[FileLayout | None] = [None] * len(files)
    reads: dict[int, HeaderRead] = {}
    verified = np.zeros(len(files), dtype=bool)
    counter = _Counter(progress)
    empty = HeaderRead(None, None, cut=True)
    for i, (name, size) in enumerate(zip(listed.names, listed.sizes.tolist(), strict=True)):
        if name in known:
            layouts[i] = known[name]
            verified[i] = True
        elif size == 0:
            reads[i] = empty  # nothing to parse
        else:
            by_size[size].append(i)
    unread = len(files) - sum(map(len, by_size.values()))
    if unread:
        counter.add(unread)
    signatures: list[bytes] = []
    file_signature = np.full(len(files), -1, np.int32)
    refs = [members[0] for members in by_size.values()]
    ref_reads = _parse_all(source, [listed.names[i] for i in refs], workers, counter)
    to_parse: list[int] = []
    for members, ref_read in zip(by_size.values(), ref_reads, strict=True):
        ref = members[0]
        verified[ref] = True
        layouts[ref] = ref_layout = ref_read.layout
        if ref_read.layout is None or ref_read.notes:
            reads[ref] = ref_read
        rest = members[1:]
        if not rest:
            continue
        if (
            validate
            or ref_layout is None
            or not _sound(ref_read, int(listed.sizes[ref]))
            or ref_layout.storage != "contiguous"
            or ref_layout.data_offset is None
            or ref_layout.data_offset > MAX_SIGNATURE_BYTES
        ):
            to_parse.extend(rest)
            continue
        end = ref_layout.data_offset
        sample = sorted({members[len(members) // 2], members[-1]} - {ref})
        try:
            sig = source.read_header(listed.names[ref], end)
            heads = _heads(source, [listed.names[i] for i in sample], end, workers)
        except FileChangedError:
            to_parse.extend(rest)  # one of them changed since the listing: parse each
            continue
        if any(h != sig for h in heads):
            to_parse.extend(rest)
            continue
        verified[sample] = True
        counter.add(len(rest))
        file_signature[rest] = len(signatures)
        signatures.append(sig)
        for i in rest:
            layouts[i] = ref_layout
    if to_parse:
        parsed = _parse_all(source, [listed.names[i] for i in to_parse], workers, counter)
        for i, read in zip(to_parse, parsed, strict=True):
            verified[i] = True
            layouts[i] = read.layout
            if read.layout is None or read.notes:
                reads[i] = read
    given = frozenset(i for i, name in enumerate(listed.names) if name in known)
    return HeaderScan(layouts, signatures, file_signature, verified, reads, given)


def check_same_array(
    source: FileSource, files: Sequence[SourceFile], layouts: Sequence[FileLayout]
) -> None:
    """Raise :class:`LayoutMismatchError` naming the first file unlike the first."""
    first = layouts[0]
    seen: set[int] = {id(first)}
    for i, other in enumerate(layouts):
        if id(other) in seen:
            continue
        seen.add(id(other))
        if not first.same_array(other):
            raise LayoutMismatchError(
                "The files do not hold arrays of one shape and type, so they cannot be stacked:\n"
                f"  {source.url(files[0].name)}: {first.describe()}\n"
                f"  {source.url(files[i].name)}: {other.describe()}\n"
                f"They differ in {'; '.join(first.differences(other))}. Open each kind "
                "separately (a narrower glob or a list of files)."
            )


#: A file whose header declares more pixel bytes than this many times its size (and
#: more than :data:`PLAUSIBLE_FLOOR`) is refused at open: a corrupt header or a
#: decompression bomb, whose sizes would otherwise flow into every allocation.
PLAUSIBLE_EXPANSION = 1 << 12
PLAUSIBLE_FLOOR = 1 << 28


def check_plausible(
    source: FileSource, files: Sequence[SourceFile], layouts: Sequence[FileLayout]
) -> None:
    """Raise :class:`TiffReadError` naming a file whose header declares an absurd image."""
    declared_of: dict[int, int] = {}  # files written alike share one layout: work it out once
    listed = ListedFiles.of(files)  # its columns: no record per file
    for i, (size, lay) in enumerate(zip(listed.sizes.tolist(), layouts, strict=True)):
        declared = declared_of.get(id(lay))
        if declared is None:
            declared = math.prod(lay.shape) * np.dtype(lay.dtype).itemsize
            declared_of[id(lay)] = declared
        if declared > max(PLAUSIBLE_FLOOR, PLAUSIBLE_EXPANSION * size):
            f = listed[i]
            raise TiffReadError(
                f"{source.url(f.name)}: its header declares an image of {lay.shape} "
                f"{np.dtype(lay.dtype).name} ({declared:,} bytes) in a file of {f.size:,} "
                "bytes. The header is corrupt, the file a decompression bomb, or it has "
                "barely begun to be written; replace it or leave it out (exclude=...)."
            )


def check_truncated(m: Manifest, how: str = "validate=True") -> None:
    """Raise :class:`TiffReadError` naming the files whose header points past their end."""
    bad = m.truncated_files()
    if not bad:
        return
    ends = m.data_ends()
    lines = [
        f"  {m.url(i)}: pixel data end at byte {int(ends[i])}, the file holds "
        f"{int(m.file_sizes[i])} bytes"
        for i in bad[:10]
    ]
    more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
    raise TiffReadError(
        f"{len(bad)} file{'s are' if len(bad) > 1 else ' is'} truncated (still being "
        "written, or cut short):\n" + "\n".join(lines) + more + "\nReplace "
        f"{'them' if len(bad) > 1 else 'it'}, or open without {how} to read the other files "
        "(chunks of a truncated file then fail when read)."
    )


def group_signature(m: Manifest, file: int) -> bytes | None:
    """The header bytes ``file`` must begin with (its group's) for its group's layout to
    be its own; ``None`` when its header was parsed or compared at open already."""
    k = int(m.file_signature[file])
    return None if m.verified[file] or k < 0 else m.signatures[k]


def check_file(m: Manifest, file: int) -> FileLayout:
    """The layout to read ``file`` with, comparing its header with its group's if unchecked.

    A file written differently from its group (same size, other header bytes) is
    parsed and read by its own header.

    Raises
    ------
    LayoutMismatchError
        When the file holds a different array from the rest.
    """
    layout = m.file_layout_of(file)
    signature = group_signature(m, file)
    if signature is None:
        return layout
    name = m.files[file]
    if m.source.read_header(name, len(signature)) == signature:
        return layout
    with m.source.open(name) as fh:
        own = read_layout(fh, m.url(file))
    if not own.same_array(layout):
        raise LayoutMismatchError(
            f"{m.url(file)}: holds {own.describe()}, but the acquisition's files "
            f"hold {layout.describe()}. Remove or replace this file, or open the "
            "source with validate=True to find every such file up front."
        )
    logger.debug("%s: header differs from its group; using its own", m.url(file))
    return own


def _head_differs(m: Manifest, file: int) -> bool:
    signature = m.signatures[int(m.file_signature[file])]
    return m.source.read_header(m.files[file], len(signature)) != signature


def verify_manifest(m: Manifest, workers: int = 16) -> Manifest:
    """A manifest in which every file's header has been checked.

    Files accepted at open on the strength of their size (and a sample of their
    group's headers) have their header bytes compared with their group's; a file
    written differently is parsed and described by its own header. Consumers that
    must not trust sizes alone (reference files, saved manifests) use this.

    Raises
    ------
    LayoutMismatchError
        A file holds a different array from the rest.
    TiffReadError
        A file cannot be read, or is shorter than its header says.

    Examples
    --------
    >>> store = tiffstore.open("raw/")  # doctest: +SKIP
    >>> checked = tiffstore.verify_manifest(store.manifest)  # doctest: +SKIP
    >>> checked.fully_verified  # doctest: +SKIP
    True
    """
    unchecked = np.flatnonzero(~m.verified & (m.file_signature >= 0)).tolist()
    if unchecked:

        def differing(batch: list[int]) -> list[int]:
            return [i for i in batch if _head_differs(m, i)]

        # Batches, not a task per file: a check is one small read, cheaper than a task.
        n_batches = max(1, min(workers, len(unchecked) // 64))
        batches = [unchecked[k::n_batches] for k in range(n_batches)]
        if n_batches > 1:
            with ThreadPoolExecutor(max_workers=n_batches) as pool:
                found = [i for part in pool.map(differing, batches) for i in part]
        else:
            found = differing(batches[0])
        changes: dict[str, Any] = {}
        if found:
            # Written otherwise than their group: described by their own headers.
            layouts = [m.file_layout_of(i) for i in range(len(m.files))]
            for i in sorted(found):
                layouts[i] = check_file(m, i)
            geometries, file_layout, tables = columnize(layouts)
            changes = {"layouts": geometries, "file_layout": file_layout, "tables": tables}
        m = dataclasses.replace(
            m,
            signatures=(),
            file_signature=np.full(len(m.files), -1, np.int32),
            verified=np.ones(len(m.files), bool),
            **changes,
        )
    check_truncated(m, "verifying")
    return m
