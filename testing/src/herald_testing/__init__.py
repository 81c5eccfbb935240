"""Test tooling for Herald: real backing services, MailDev, and the local stack."""
