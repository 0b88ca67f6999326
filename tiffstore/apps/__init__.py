"""The apps stage: integrations over the store and the outputs.

:mod:`~tiffstore.apps.serve` (HTTP, with a viewer page), :mod:`~tiffstore.apps.preview`
(a contact sheet), :mod:`~tiffstore.apps.check` (which files no longer match),
:mod:`~tiffstore.apps.xarray_backend` and :mod:`~tiffstore.apps.napari_reader`, and
the acquisition grid they share (:mod:`~tiffstore.apps.grid`).
"""
