"""The TIFF stage: one file's header -> layout, codecs and pixel size, parsed by tifffile.

:func:`tiffstore.tiff.header.read_layout` reads a header into a
:class:`~tiffstore.tiff.layout.FileLayout` (plain data); :mod:`~tiffstore.tiff.codecs`
names each TIFF compression as numcodecs codecs, :mod:`~tiffstore.tiff.scale` reads
the pixel size, and :mod:`~tiffstore.tiff.pages` decodes what only tifffile can.
"""
