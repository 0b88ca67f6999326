"""Icechunk repositories of virtual chunk references to the TIFFs (see :mod:`.write`).

:func:`~tiffstore.outputs.icechunk.write.to_icechunk` is the entry point; the
modules of this folder are its parts: the repository (storage, containers, the
marker), the layout written into it, and appending new files.
"""
