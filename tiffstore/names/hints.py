"""What to tell a user whose names do not form one acquisition: globs and templates to try.

No I/O: the messages are built from the names alone.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

from tiffstore.names.axes import Axis
from tiffstore.names.templates import suggest_template

__all__ = ["experiment_hint", "glob_hint", "spelled", "structure_error"]


def _folder(name: str) -> str:
    return name.rsplit("/", 1)[0] if "/" in name else ""


def spelled(option: str, globs: Sequence[str]) -> str:
    """``include=['a*'] (--include 'a*')``: an option as Python and the shell write it."""
    lib = ", ".join(f"{g!r}" for g in globs)
    cli = " ".join(f"--{option} '{g}'" for g in globs)
    return f"{option}=[{lib}] ({cli})"


def glob_hint(main: Sequence[str], others: Sequence[str]) -> str:
    """An ``include=``/``exclude=`` choice that keeps ``main`` and drops ``others``, for
    messages; empty when no simple glob tells them apart."""
    main_dirs = {_folder(n) for n in main}
    other_dirs = {_folder(n) for n in others}
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


#: Labels of a name part that names an experiment or a run rather than a dimension.
EXPERIMENT_LABELS = frozenset({"ex", "exp", "expt", "experiment", "acq", "acquisition", "run"})

#: The leading part of a name: its first folder, else its file name up to ``_`` or a space.
_LEAD = re.compile(r"^([^/]+)/|^([^_ /]+)[_ ]")

#: An experiment's name: letters and digits (``ex6-2``, ``exp03``, ``run1b``).
_NAME_LIKE = re.compile(r"(?=.*[^\W\d_])(?=.*\d)")


def _escaped(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def experiment_hint(
    names: Sequence[str], axes: Sequence[Axis], positions: Sequence[tuple[int, ...] | None]
) -> str:
    """A warning when the names differ only in a leading part that looks like the name of
    an experiment (``ex6-2_...`` and ``ex7-1_...``), made an axis of one array: such
    files are more likely two acquisitions in one folder. Empty when not so.

    The message shows the ``include=`` glob that opens each acquisition alone.

    Examples
    --------
    >>> from tiffstore.names.grid import understand_names
    >>> names = [f"ex{e}_ch0_t{t}.tif" for e in ("6-2", "7-1") for t in range(2)]
    >>> g = understand_names(names)
    >>> "include=['ex6-2_*']" in experiment_hint(names, g.axes, g.positions)
    True
    """
    suspects = [
        k
        for k, a in enumerate(axes)
        if a.kind == "other"
        and (re.fullmatch(r"field\d+", a.name) or (a.label or a.name).lower() in EXPERIMENT_LABELS)
    ]
    if not suspects:
        return ""
    leads: list[str] = []
    folders = False
    for name in names:
        m = _LEAD.match(name)
        if m is None:
            return ""
        folders = folders or m.group(1) is not None
        leads.append(m.group(1) or m.group(2))
    distinct = sorted(set(leads))
    if not 2 <= len(distinct) <= 12 or not all(_NAME_LIKE.match(lead) for lead in distinct):
        return ""
    for k in suspects:
        pairs = {(lead, pos[k]) for lead, pos in zip(leads, positions, strict=True) if pos}
        if len(pairs) != len(distinct) or len({v for _, v in pairs}) != len(distinct):
            continue  # the leading part does not alone decide this axis
        shown = distinct[:4]
        globs = [_escaped(lead) + ("/*" if folders else "_*") for lead in shown]
        each = "; ".join(spelled("include", [g]) for g in globs)
        more = f"; ... and {len(distinct) - 4} more" if len(distinct) > 4 else ""
        return (
            f"The file names differ in a leading part that looks like the name of an "
            f"experiment ({', '.join(shown)}{', ...' if len(distinct) > 4 else ''}), made "
            f"the axis {axes[k].name!r} of one array. If these are separate acquisitions, "
            f"open each alone: {each}{more}. If they belong together, give pattern= to name "
            "the axis, which silences this."
        )
    return ""
