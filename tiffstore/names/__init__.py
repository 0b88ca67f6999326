"""The naming stage: file names -> axes, coordinates and templates. No I/O.

:func:`tiffstore.names.grid.understand_names` is the entry point; the other modules
are its steps (tokens, fields, templates, strays, the axis search) and the values it
makes (:mod:`tiffstore.names.axes`). Modules are imported by their own path: this
package's ``__init__`` imports nothing, so that a consumer of the axis values does
not load name parsing.
"""
