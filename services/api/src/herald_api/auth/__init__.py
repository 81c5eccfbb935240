"""Who the caller is: passwords, access tokens, rate limits, logging in."""
