"""The machinery behind the AI assets: model catalog, provider adapters, routing, ledger.

Every piece here is plain Python, usable and testable without Dagster; each is exposed
to Dagster through a thin ``ConfigurableResource``.
"""
