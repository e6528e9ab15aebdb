"""Provider adapters, one module per wire protocol, all returning ``CallResult``."""
