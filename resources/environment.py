"""Settings read from environment variables, refused with the variable's name when they cannot be what they set.

A deployment sets ``AI_ORCH_DAILY_BUDGET_USD=abc`` once, and every Dagster code location load
and every ``ai-orch`` command then failed with ``could not convert string to float: 'abc'``,
naming neither the variable nor what it should hold; ``-5`` or ``nan`` failed later, inside a
step. Read through here, the first use says which variable, what it holds, and what it takes.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence


class SettingError(ValueError):
    """A setting the user can fix (an environment variable, the model catalog, the data policy file): said in
    one line naming it, never as a traceback (``ai-orch`` exits 2)."""


class EnvironmentSettingError(SettingError):
    """An environment variable holds a value its setting cannot take; the message names both."""


def env_amount(name: str) -> Optional[float]:
    """A finite, non-negative number from ``name``; None when it is unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise EnvironmentSettingError(f"{name} must be a number of 0 or more, not {raw!r}")
    return value


def env_choice(name: str, choices: Sequence[str], default: str) -> str:
    """One of ``choices`` from ``name`` (case kept as listed); ``default`` when it is unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw not in choices:
        raise EnvironmentSettingError(f"{name} must be one of {', '.join(choices)}, not {raw!r}")
    return raw
