"""``python -m polyculture`` runs the command line."""

from polyculture.cli.main import main

main()
