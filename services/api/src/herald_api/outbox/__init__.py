"""The transactional outbox: stage messages with their transaction, push them after."""
