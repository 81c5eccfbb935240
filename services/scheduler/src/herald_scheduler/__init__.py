"""Herald's scheduler: the only owner of cron jobs; the API does the work they ask for.

See docs/scheduler.md for its jobs, replicas and modules.
"""
