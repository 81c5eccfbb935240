"""Routers of the account use cases, one per resource."""
