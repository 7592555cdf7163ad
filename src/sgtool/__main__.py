"""`python -m sgtool` runs the command line."""

from .cli import main

main()
