"""What to tell a user whose names do not form one acquisition: globs and templates to try.

No I/O: the messages are built from the names alone.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

from tiffstore.names.templates import suggest_template

__all__ = ["glob_hint", "structure_error"]


def _folder(name: str) -> str:
    return name.rsplit("/", 1)[0] if "/" in name else ""


def glob_hint(main: Sequence[str], others: Sequence[str]) -> str:
    """An ``include=``/``exclude=`` choice that keeps ``main`` and drops ``others``, for
    messages; empty when no simple glob tells them apart."""
    main_dirs = {_folder(n) for n in main}
    other_dirs = {_folder(n) for n in others}

    def spelled(option: str, globs: Sequence[str]) -> str:
        lib = ", ".join(f"{g!r}" for g in globs)
        cli = " ".join(f"--{option} '{g}'" for g in globs)
        return f"{option}=[{lib}] ({cli})"

    if not main_dirs & other_dirs:
        if main_dirs == {""}:
            tops = sorted({n.split("/", 1)[0] for n in others})
            if len(tops) <= 3:
                return (
                    spelled("exclude", [f"{t}/*" for t in tops])
                    + ", or recursive=False (--no-recursive)"
                )
        elif len(main_dirs) == 1:
            (folder,) = main_dirs
            return spelled("include", [f"{folder}/*"])
    if len(others) == 1:
        return spelled("exclude", [re.sub(r"([*?\[])", r"[\1]", others[0])])
    # A common ending of the other names (``_MIP_z.tif``) that no kept name has.
    ending = "".join(
        reversed(
            [
                chars[0]
                for chars in itertools.takewhile(
                    lambda chars: len(set(chars)) == 1,
                    zip(*(n[::-1] for n in others), strict=False),
                )
            ]
        )
    )
    ending = ending.lstrip("0123456789")
    shortest = min(map(len, others))
    if 4 < len(ending) < shortest and not any(n.endswith(ending) for n in main):
        return spelled("exclude", [f"*{ending}"])
    return ""


def structure_error(names: Sequence[str], signatures: list[tuple[str, ...]]) -> str:
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, sig in zip(names, signatures, strict=True):
        groups.setdefault(sig, []).append(name)
    # The largest group first; among equals the one fewest folders down.
    ranked = sorted(groups.values(), key=lambda g: (-len(g), g[0].count("/")))
    examples = "\n".join(f"  {g[0]!r} (and {len(g) - 1} more like it)" for g in ranked[:4])
    main = ranked[0]
    others = [n for g in ranked[1:] for n in g]
    hint = glob_hint(main, others)
    files = "the file" if len(main) == 1 else f"the {len(main)} files"
    choose = (
        f"To open {files} like the first, pass {hint}; or "
        if hint
        else "Select one acquisition with a narrower glob or include=/exclude= globs, or "
    )
    return (
        f"The file names do not share one structure (they fall into {len(groups)} groups: "
        f"another folder level or another part), so their axes cannot be inferred:\n"
        f"{examples}\n" + choose + "give pattern= with a template; "
        f"for names like the first, start from:\n  {suggest_template(main)}"
    )
