"""Every option of an open, defined once: :class:`OpenOptions`.

``tiffstore.open``, the command line (one shared set of arguments), the xarray
backend, the napari reader, ``serve``, ``materialize`` and ``check`` all build one
:class:`OpenOptions` and pass it on. Where an entry point cannot apply an option
(``pattern=`` to a reference file, whose names were read when it was written), it
says so by name with :meth:`OpenOptions.refuse`, never ignores it.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tiffstore.errors import OptionError
from tiffstore.manifest.build import ScaleSpec
from tiffstore.manifest.chunking import ChunkSpec
from tiffstore.sources.settings import RemoteSettings

__all__ = ["OPTION_NAMES", "OpenOptions"]

#: What each option does, in a few words, for messages.
_WHAT = {
    "pattern": "how the file names are read",
    "chunks": "the store's chunks",
    "fill_value": "the value of cells with no file",
    "storage_options": "fsspec options for URLs",
    "validate": "reading every header at the open",
    "tiles": "stitching tiles",
    "recursive": "searching subfolders",
    "include": "which files are kept",
    "exclude": "which files are left out",
    "scale": "the pixel size",
    "zarr_format": "the Zarr format served",
    "sharded": "format 3 shards",
    "checksum": "content checksums",
    "remote": "remote time limits and retries",
    "kvikio": "KvikIO reads into GPU memory",
}


def _globs(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class OpenOptions:
    """How to open a source: every option of :func:`tiffstore.open`, as one value.

    Attributes
    ----------
    pattern
        How to read the file names: ``None`` infers the axes; a template
        (``"{_}_ch{ch}_stack{stack}_{wavelength}nm_{_}.tif"``; ``{_}`` ignores a part,
        ``{name:axis}`` and ``{name:coord}`` force a role) or a regular expression
        with named groups names them.
    chunks
        ``None`` groups whole pages into chunks of about 16 MiB; ``"page"`` one page
        (z-plane) per chunk; ``"file"`` one file; ``"native"`` one of the files' own
        strips or tiles; an int that many pages; a tuple the chunk shape (``None``/-1
        for a whole dim).
    fill_value
        Value served where the grid has no file (default 0).
    storage_options
        Passed to fsspec for URLs (the files', and a reference file's).
    validate
        Parse every file's header now, and check that each holds all the pixel data
        its header points to. By default files of the same size whose header bytes
        match a parsed file are trusted, and each is checked on its first read.
    tiles
        ``"keep"`` leaves tile fields of the names (``000x_001y``) as axes of their
        own; ``"stitch"`` places a non-overlapping grid of tiles side by side.
    recursive
        Search a folder's subfolders too (default), or only the folder itself.
    include, exclude
        Globs on the names relative to the folder: keep only files matching
        ``include``, then drop those matching ``exclude``.
    scale
        What one pixel measures along the files' ``z``, ``y``, ``x``, overriding their
        metadata: ``{"z": 2.0, "y": 0.1}`` (in the files' unit, else micrometres) or
        ``{"z": (2.0, "micrometer")}``.
    zarr_format
        2: ``.zarray``/``.zgroup`` metadata; 3: ``zarr.json`` with ``dimension_names``.
    sharded
        Format 3: serve a chunk of several whole pages as a shard of pages.
    checksum
        Read every byte now and check every later read against block checksums.
    remote
        Time limits, retries and concurrency of remote reads
        (:class:`~tiffstore.sources.settings.RemoteSettings`, or a mapping of its fields).
    kvikio
        Reads into GPU memory: ``None`` uses KvikIO where installed, ``False`` never,
        ``True`` always.

    Examples
    --------
    >>> options = OpenOptions(pattern="{_}_ch{ch}_t{t}.tif", chunks="page")
    >>> options.given()
    ('pattern', 'chunks')
    >>> OpenOptions.of(options, include="raw/*").include
    ('raw/*',)
    """

    pattern: str | None = None
    chunks: ChunkSpec = None
    fill_value: int | float | None = None
    storage_options: Mapping[str, Any] | None = None
    validate: bool = False
    tiles: str = "keep"
    recursive: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    scale: ScaleSpec | None = None
    zarr_format: int = 2
    sharded: bool = True
    checksum: bool = False
    remote: RemoteSettings = field(default_factory=RemoteSettings)
    kvikio: bool | None = None

    def __post_init__(self) -> None:
        # Normal forms: a glob or a list of them, settings or a mapping of them.
        object.__setattr__(self, "include", _globs(self.include))
        object.__setattr__(self, "exclude", _globs(self.exclude))
        object.__setattr__(self, "remote", RemoteSettings.of(self.remote))
        if self.tiles not in ("keep", "stitch"):
            raise OptionError(
                f"tiles={self.tiles!r}: use 'keep' (tile axes stay axes) or 'stitch'."
            )
        if self.zarr_format not in (2, 3):
            raise OptionError(
                f"zarr_format={self.zarr_format!r}: tiffstore serves Zarr format 2 or 3; "
                "pass 2 or 3."
            )
        if self.storage_options is not None and not isinstance(self.storage_options, Mapping):
            raise OptionError(
                f"storage_options={self.storage_options!r}: give a mapping of fsspec options, "
                'like {"anon": True}.'
            )
        if self.kvikio not in (None, True, False):
            raise OptionError(f"kvikio={self.kvikio!r}: use None (when installed), True or False.")

    @classmethod
    def of(cls, options: OpenOptions | None = None, **changes: Any) -> OpenOptions:
        """``options`` (default: the defaults) with ``changes``, checked by name.

        Raises
        ------
        OptionError
            A change names no option (the message suggests the closest one).
        """
        unknown = [name for name in changes if name not in OPTION_NAMES]
        if unknown:
            name = unknown[0]
            close = difflib.get_close_matches(name, OPTION_NAMES, n=1)
            hint = f" Did you mean {close[0]}=?" if close else ""
            raise OptionError(
                f"{name}= is not an option of tiffstore.open.{hint} The options are "
                f"{', '.join(OPTION_NAMES)}."
            )
        base = options if options is not None else cls()
        return dataclasses.replace(base, **changes) if changes else base

    def given(self) -> tuple[str, ...]:
        """The options that differ from their defaults, in declaration order."""
        default = OpenOptions()
        return tuple(name for name in OPTION_NAMES if getattr(self, name) != getattr(default, name))

    def refuse(
        self, names: Collection[str], where: str, why: Mapping[str, str] | None = None
    ) -> None:
        """Raise :class:`OptionError` if any option of ``names`` was given.

        Parameters
        ----------
        names
            The options that cannot apply at this entry point.
        where
            What they cannot apply to, for the message (``"a reference file"``).
        why
            Per option, what to do instead.
        """
        given = [name for name in self.given() if name in names]
        if not given:
            return
        reasons = why or {}
        parts = [
            f"{name}= ({_WHAT[name]}) does not apply to {where}"
            + (f": {reasons[name]}" if name in reasons else ".")
            for name in given
        ]
        raise OptionError(" ".join(p if p.endswith(".") else p + "." for p in parts))

    def replace(self, **changes: Any) -> OpenOptions:
        """These options with ``changes`` (checked as :meth:`of` checks them)."""
        return OpenOptions.of(self, **changes)

    @property
    def fsspec_options(self) -> dict[str, Any]:
        """``storage_options`` as a new dict (empty when none)."""
        return dict(self.storage_options or {})


#: Every option's name, in declaration order.
OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(OpenOptions))
