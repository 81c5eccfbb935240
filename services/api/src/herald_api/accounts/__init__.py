"""The account use cases: signup, email verification, password reset and change, email
change, deletion, and the housekeeping the scheduler triggers.

``AccountService`` owns each unit of work (transaction, outbox messages, commit,
publish); the routers in ``accounts.routers`` only adapt HTTP to it.
"""

from herald_api.accounts.runtime import Accounts, build_accounts
from herald_api.accounts.service import AccountService

__all__ = ["AccountService", "Accounts", "build_accounts"]
