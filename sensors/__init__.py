"""Sensors that watch the ledger: budgets now, compliance later."""
