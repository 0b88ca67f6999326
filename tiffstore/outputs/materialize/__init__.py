"""materialize: the virtual array re-encoded into a real Zarr store (see :mod:`.run`).

:func:`~tiffstore.outputs.materialize.run.materialize` is the entry point; the
modules of this folder are its steps: plan, job, runner, journal, metadata, OME and
verify.
"""
