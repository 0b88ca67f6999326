"""Stray files: names with a part the others lack, which must not invent an axis. No I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from tiffstore.names.tokens import align_like_first, split_tokens, strip_suffixes, token_kind

__all__ = ["find_strays"]


def find_strays(names: Sequence[str]) -> tuple[str, ...]:
    """Names with a part that the other names lack, which must not invent an axis.

    A stray name is the structure of most names with one extra part that starts or
    ends at a separator (``..._0000t_thumb.tif`` beside ``..._0000t.tif``, ``a (1).tif``
    beside ``a.tif``): either the name without that part is another file's name, or
    few files (at most one in 20) have it. Strays are fewer than half the names.
    Differing free text of one part (channels ``DAPI``, ``Cy5``, ``Bright Field``)
    is not stray.

    Examples
    --------
    >>> find_strays(["a_t1.tif", "a_t2.tif", "a_t3.tif", "a_t2_thumb.tif"])
    ('a_t2_thumb.tif',)
    """
    names = list(names)
    if len(names) < 3:
        return ()
    stems = strip_suffixes(names)
    if align_like_first(stems) is not None:
        return ()
    tokenized = [split_tokens(s) for s in stems]
    signatures = [tuple(map(token_kind, t)) for t in tokenized]
    counts = Counter(signatures)
    main = max(counts, key=lambda sig: (counts[sig], -len(sig)))
    main_stems = {st for st, sig in zip(stems, signatures, strict=True) if sig == main}
    few = max(1, len(names) // 20)
    strays: list[str] = []
    for name, tokens, sig in zip(names, tokenized, signatures, strict=True):
        extra = len(sig) - len(main)
        if extra <= 0:
            continue
        for i in range(len(main) + 1):
            if sig[:i] != main[:i] or sig[i + extra :] != main[i:]:
                continue
            if sig[i][0] != "s" and sig[i + extra - 1][0] != "s":
                continue
            if counts[sig] <= few or "".join(tokens[:i] + tokens[i + extra :]) in main_stems:
                strays.append(name)
                break
    if 2 * len(strays) >= len(names):
        return ()
    return tuple(strays)
