"""How remote reads behave: time limits, retries, request merging, concurrency.

One :class:`RemoteSettings` travels with each remote source (and so with every
store, pickled to dask workers), given to :func:`tiffstore.open` as ``remote=``:
two stores in one process can read over different links with different limits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tiffstore.errors import OptionError

__all__ = ["RemoteSettings"]


@dataclass(frozen=True)
class RemoteSettings:
    """Limits and sizes of remote reads (S3, HTTP and other fsspec protocols).

    Attributes
    ----------
    timeout
        Seconds a connection may stay silent before its request fails (and is
        retried); a batch of ranged reads, or a size request, is also cancelled after
        ``timeout`` plus one second per ``min_rate`` bytes it reads. A server that
        accepts a connection and never answers costs about ``(retries + 1) * timeout``
        seconds, never a hang.
    retries
        Transient failures (connection errors, timeouts, 5xx, short bodies) are
        retried this many times, waiting ``retry_wait * 2**attempt`` seconds.
    retry_wait
        Seconds before the first retry.
    min_rate
        Bytes per second a batch of reads is allowed at the least (see ``timeout``).
    version_recheck
        Where no conditional read exists (protocols other than S3 and HTTP), a file's
        version is compared again by an ``info`` request before a read when the last
        comparison is this many seconds old.
    merge_gap
        Ranges of one read closer than this many bytes are fetched as one.
    header_block
        Headers are parsed through reads of this many bytes (one covers most headers).
    kept_heads
        Files whose first block is kept after parsing, so that the header check that
        follows costs no request.
    concurrency
        Chunks read at once from a remote store, and files of remote chunks read at
        once (each its own pool of this many threads).

    Examples
    --------
    >>> store = tiffstore.open("s3://bucket/raw/", remote={"timeout": 120, "retries": 8})  # doctest: +SKIP
    >>> RemoteSettings().replace(timeout=5).timeout
    5
    """

    timeout: float = 30.0
    retries: int = 4
    retry_wait: float = 0.05
    min_rate: float = float(1 << 20)
    version_recheck: float = 5.0
    merge_gap: int = 1 << 18
    header_block: int = 1 << 16
    kept_heads: int = 64
    concurrency: int = 32

    def __post_init__(self) -> None:
        for name in ("timeout", "min_rate", "header_block", "concurrency"):
            if not getattr(self, name) > 0:
                raise OptionError(f"remote={{{name!r}: {getattr(self, name)!r}}}: must be > 0.")
        for name in ("retries", "retry_wait", "version_recheck", "merge_gap", "kept_heads"):
            if getattr(self, name) < 0:
                raise OptionError(f"remote={{{name!r}: {getattr(self, name)!r}}}: must be >= 0.")

    @classmethod
    def of(cls, value: RemoteSettings | Mapping[str, Any] | None) -> RemoteSettings:
        """Settings from ``None`` (the defaults), a mapping of fields, or settings.

        Raises
        ------
        OptionError
            A mapping names a field that does not exist, or a value out of range.
        """
        if value is None:
            return cls()
        if isinstance(value, RemoteSettings):
            return value
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise OptionError(
                f"remote={dict(value)!r}: {', '.join(map(repr, unknown))} "
                f"{'is not a setting' if len(unknown) == 1 else 'are not settings'}; "
                f"the settings are {', '.join(sorted(known))}."
            )
        return cls(**value)

    def replace(self, **changes: Any) -> RemoteSettings:
        """These settings with ``changes``."""
        return dataclasses.replace(self, **changes)
