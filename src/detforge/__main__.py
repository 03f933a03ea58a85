"""``python -m detforge`` (and ``torchrun -m detforge train ...``) runs the CLI."""

from detforge.cli import main

main()
