"""Where the team's shared data sets live, and a clean skip when a machine does not have them."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"


def shared_file(relative: str) -> Path:
    """The path of ``../shared/<relative>``, or skip the calling test with the reason."""
    path = SHARED_DIR / relative
    if not path.is_file():
        pytest.skip(f"shared data set not present at {path} (it lives beside the repo on team machines)")
    return path
