"""What a user sees in the Dagster UI: AI assets, asset checks, schedules and jobs, one folder per template.

``defs`` is the ``dagster.Definitions`` that ``workspace.yaml`` loads.
"""

from orchestration_assets.definitions import defs

__all__ = ["defs"]
