"""Herald's contract between its services; it imports none of them.

What the services agree on, one module each:

- ``messages``: the versioned queue messages (``WelcomeEmail``...), ``text`` their value types;
- ``tasks``: which message goes on which queue under which name and SAQ job policy,
  and ``enqueue``, the one way to put it there;
- ``queues``: queue names and their namespacing;
- ``redis_client``: the one way to build a Redis client, from the URL or through Sentinel;
- ``locales``: the languages Herald speaks and the fallback of a reader's locale;
- ``tokens``: link tokens, derived from the token id a message carries;
- ``ledger``: where a message stands in Redis (the keys the notifier and SAQ write);
- ``internal_api``: the API's internal HTTP endpoints the scheduler calls;
- ``settings``: ``CommonSettings``, the base of every service's ``Settings``;
- ``brand``: ``BrandSettings``, the product name and colours the emails and the pages share;
- ``logs``, ``metrics``: logging setup and Prometheus plumbing every service shares;
- ``faults``: the crash switch of the crash tests.

Import from the module (``from herald_shared.messages import WelcomeEmail``): nothing is
re-exported here, so importing one module never loads the others (the tokens need no
SAQ, the messages no Prometheus) and no import here can cycle with a module's own.
"""

__all__ = [
    "brand",
    "faults",
    "internal_api",
    "ledger",
    "locales",
    "logs",
    "messages",
    "metrics",
    "queues",
    "redis_client",
    "settings",
    "tasks",
    "text",
    "tokens",
]
