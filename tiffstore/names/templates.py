"""Templates: ``"{_}_ch{ch}_stack{stack}_{wavelength}nm_{_}.tif"`` <-> fields.

A template (or a regular expression with named groups) names the parts of the
names in place of inference: :func:`fields_from_pattern` matches every name
against it. :func:`render_template` writes how names were understood as a
template, and :func:`suggest_template` offers one to start from. No I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from tiffstore.errors import NamingError
from tiffstore.names.fields import (
    UNIT_LABELS,
    NameField,
    Role,
    fields_from_names,
    fields_table,
    parse_values,
)
from tiffstore.names.tokens import UUID_PATTERN, Columns, strip_tiff_suffix

__all__ = ["fields_from_pattern", "inferred_hint", "render_template", "suggest_template"]

_TEMPLATE_FIELD_RE = re.compile(r"\{([^{}:]*)(?::([^{}]*))?\}")
_UNIT_PREFIX_RE = re.compile(r"[^\W\d_]+")
# A field written right against the next field ends where its digits or letters
# end, except before a UUID (``w1`` + ``9E1F...``).
_RUN_FIELD = rf"\d+?(?={UUID_PATTERN})|\d+(?!\d)|[^\W\d_]+(?![^\W\d_])"


def _template_regex(
    template: str,
) -> tuple[re.Pattern[str], list[tuple[str, Role, str | None]]]:
    """Compile a ``{name}`` template into a regex, and each field's role and units."""
    parts: list[str] = []
    fields: list[tuple[str, Role, str | None]] = []
    matches = list(_TEMPLATE_FIELD_RE.finditer(template))
    pos = 0
    ignored = 0
    for k, m in enumerate(matches):
        literal = template[pos : m.start()].replace("{{", "{").replace("}}", "}")
        parts.append(re.escape(literal))
        end = matches[k + 1].start() if k + 1 < len(matches) else len(template)
        following = template[m.end() : end]
        body = _RUN_FIELD if (k + 1 < len(matches) and not following) else "[^/]+?"
        name, spec = m.group(1).strip(), (m.group(2) or "").strip().lower()
        if not name or name.startswith("_"):
            parts.append(f"(?P<_ignored{ignored}>{body if body != '[^/]+?' else '.*?'})")
            ignored += 1
        else:
            if not name.isidentifier():
                raise NamingError(
                    f"Template field {{{name}}} is not a valid name; use letters, digits and _."
                )
            if spec not in ("", "axis", "coord", "auto", "d", "s"):
                raise NamingError(
                    f"Template field {{{name}:{spec}}}: the role must be 'axis' or 'coord'."
                )
            role: Role = spec if spec in ("axis", "coord") else "auto"  # type: ignore[assignment]
            if any(n == name for n, _, _ in fields):
                raise NamingError(f"Template field {{{name}}} appears twice in {template!r}.")
            unit = _UNIT_PREFIX_RE.match(following)
            units = UNIT_LABELS.get(unit.group().lower(), (None, None))[1] if unit else None
            fields.append((name, role, units))
            parts.append(f"(?P<{name}>{body})")
        pos = m.end()
    parts.append(re.escape(template[pos:].replace("{{", "{").replace("}}", "}")))
    if not fields:
        raise NamingError(f"The template {template!r} names no field; write fields as {{name}}.")
    return re.compile("".join(parts)), fields


def fields_from_pattern(
    names: Sequence[str], pattern: str, strays: Sequence[str] = ()
) -> list[NameField]:
    """Match every name against a template or a regex with named groups.

    ``strays`` are left out of the template suggested when names do not match.
    """
    if "(?P<" in pattern:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise NamingError(f"pattern= is not a valid regular expression: {exc}") from None
        specs: list[tuple[str, Role, str | None]] = [(n, "auto", None) for n in regex.groupindex]
    else:
        regex, specs = _template_regex(pattern)
    has_suffix = strip_tiff_suffix(pattern) != pattern or pattern.endswith("$")
    matched: list[dict[str, str]] = []
    failed: list[str] = []
    for name in names:
        candidates = [name, name.rsplit("/", 1)[-1]]
        if not has_suffix:
            candidates = [strip_tiff_suffix(c) for c in candidates]
        m = next((m for c in candidates if (m := regex.fullmatch(c))), None)
        if m is None:
            failed.append(name)
        else:
            matched.append({k: v for k, v in m.groupdict().items() if v is not None})
    if failed:
        shown = "\n".join(f"  {n}" for n in failed[:5])
        more = f"\n  ... and {len(failed) - 5} more" if len(failed) > 5 else ""
        raise NamingError(
            f"{len(failed)} of {len(names)} files do not match pattern {pattern!r}:\n{shown}{more}\n"
            + inferred_hint(names, strays)
            + "\nFix the pattern, or select only the acquisition's files with a narrower glob."
        )
    return [
        NameField(
            name,
            order,
            parse_values([m.get(name, "") for m in matched]),
            label=name,
            units=units,
            role=role,
        )
        for order, (name, role, units) in enumerate(specs)
    ]


def render_template(
    names: Sequence[str], cols: Columns, fields: list[NameField], roles: dict[str, Role]
) -> str:
    """The template of the first name with each field in ``roles`` written as ``{name}``."""
    shown = {f.position: f for f in fields if f.name in roles}
    out: list[str] = []
    skip_to = 0
    for i, col in enumerate(cols.columns):
        if i < skip_to:
            continue
        f = shown.get(i)
        if f is not None:
            out.append("{" + f.name + (":coord" if roles[f.name] == "coord" else "") + "}")
            skip_to = i + f.width
        else:
            out.append(col[0].replace("{", "{{").replace("}", "}}"))
    stem = strip_tiff_suffix(names[0])
    return "".join(out) + names[0][len(stem) :]


def _without(names: Sequence[str], strays: Sequence[str]) -> list[str]:
    out = set(strays)
    return [n for n in names if n not in out] if out else list(names)


def suggest_template(names: Sequence[str], strays: Sequence[str] = ()) -> str:
    """A template for names, with every varying part a field (parts of a well kept apart).

    ``strays`` (names with a part the others lack, ``..._thumb.tif`` beside the
    acquisition: see :func:`tiffstore.names.strays.find_strays`) are left out: their
    extra part is no field of the acquisition.
    """
    names = _without(names, strays)
    found = fields_from_names(names)
    if found is None:
        return "{_}_{field1}_{field2}.tif"
    fields, cols = found
    return render_template(names, cols, fields, {f.name: "auto" for f in fields if f.width == 1})


def inferred_hint(names: Sequence[str], strays: Sequence[str] = ()) -> str:
    """The fields found without a template and a template to start from, for messages
    (``strays`` left out, and said so)."""
    names = _without(names, strays)
    found = fields_from_names(names)
    if found is None:
        return ""
    left_out = ""
    if strays:
        them = ", ".join(strays[:3]) + (" ..." if len(strays) > 3 else "")
        left_out = (
            f" (leaving out {len(strays)} stray file{'s' if len(strays) > 1 else ''} whose "
            f"name has a part the others lack: {them})"
        )
    return f"{fields_table(found[0])}\nStart from{left_out}:\n  {suggest_template(names)}"
