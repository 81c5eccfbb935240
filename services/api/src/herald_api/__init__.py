"""Herald API."""
