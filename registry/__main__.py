"""``python -m registry`` runs the kreg command line."""

from ._cli import main

main()
