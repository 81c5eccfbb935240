"""``python -m herald_notifier``."""

from herald_notifier.cli import main

if __name__ == "__main__":
    main()
