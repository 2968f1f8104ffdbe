"""``python -m tui`` runs the snapdeck command."""

from tui.cli import main

main()
