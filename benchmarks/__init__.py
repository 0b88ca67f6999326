"""tiffstore's benchmark suite: run ``python benchmarks/run.py`` (see ``--help``)."""
