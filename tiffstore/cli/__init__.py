"""The ``tiffstore`` command: argument parsing and printing only.

``tiffstore inspect SOURCE`` shows what tiffstore understood of an acquisition;
``tiffstore demo`` writes sample data and walks through opening and reading it;
``tiffstore materialize SOURCE OUT`` writes a real, compressed Zarr copy;
``tiffstore refs SOURCE TARGET`` writes fsspec reference files;
``tiffstore preview SOURCE out.png`` draws a contact sheet of what was understood;
``tiffstore check TARGET`` names files that changed or are broken;
``tiffstore serve SOURCE`` serves the array over HTTP with a viewer page.

The entry point is :func:`tiffstore.cli.main.main`.
"""
