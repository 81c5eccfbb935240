"""Herald notifier."""
