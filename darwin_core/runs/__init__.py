"""Runs: the one job queue and its worker, reading runs for the pages, and the quotas a public Space enforces."""
