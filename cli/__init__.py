"""deepclust.cli: the ``deepclust`` command (Typer)."""
