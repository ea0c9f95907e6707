"""The command's name, as its messages begin: defined here, not in cli.py, so that the jobs the
command runs (training prints its own notes) name it without importing the CLI that imports them."""

PROG = "siglip-search"
