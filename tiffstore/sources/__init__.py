"""The sources stage: listing an acquisition's files and reading byte ranges of them.

:func:`tiffstore.sources.listing.resolve_source` lists; a
:class:`~tiffstore.sources.base.FileSource` reads: local files
(:mod:`~tiffstore.sources.local`), any fsspec file system
(:mod:`~tiffstore.sources.remote`, with :mod:`~tiffstore.sources.network` and
:mod:`~tiffstore.sources.settings`), and checksummed reads over either
(:mod:`~tiffstore.sources.checksums`).
"""
