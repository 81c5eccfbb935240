"""Infrastructure every domain stands on: settings, database, HTTP errors, logs, metrics."""
