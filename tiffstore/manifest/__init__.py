"""The manifest stage: the virtual array as plain data, and how it is built and saved.

:class:`~tiffstore.manifest.model.Manifest` (with :mod:`~tiffstore.manifest.tables`)
is the description at the centre: picklable, comparable, no open files. Around it:
:mod:`~tiffstore.manifest.plans` (which bytes fill a chunk),
:mod:`~tiffstore.manifest.chunking` (chunk shapes), :mod:`~tiffstore.manifest.headers`
(reading and checking headers), :mod:`~tiffstore.manifest.build` (the policy that
makes one), :mod:`~tiffstore.manifest.saved` (its saved form) and
:mod:`~tiffstore.manifest.documents` (its Zarr metadata documents).
"""
