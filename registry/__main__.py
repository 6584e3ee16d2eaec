"""``python -m registry`` runs the kreg command line."""

from .cli import main

if __name__ == "__main__":
    main()
