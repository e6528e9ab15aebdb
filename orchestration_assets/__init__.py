"""What a user sees in the Dagster UI: AI assets, asset checks, schedules and jobs, one folder per template.

``defs`` is the ``dagster.Definitions`` that ``workspace.yaml`` loads. It is built when first
asked for, not when the package is imported: building it reads the environment's settings
(``resources.environment``), and a bad one must reach ``ai-orch`` as its own one-line error,
not as a traceback from importing the package the command lives in.
"""

__all__ = ["defs"]


def __getattr__(name: str):
    if name == "defs":
        from orchestration_assets.definitions import defs

        return defs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "defs"})
