"""The ``detforge`` command line: a Typer app whose commands call the public API only."""

from detforge.cli.app import app, main

__all__ = ["app", "main"]
