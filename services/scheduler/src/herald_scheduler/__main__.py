"""``python -m herald_scheduler``: same as ``herald-scheduler``."""

from herald_scheduler.cli import main

main()
