"""Where fitted routing policies live: versioned files beside the ledger, and a pointer to the latest.

The ``routing_policy`` asset writes here and records the version in its materialization
metadata; the routing resource reads the latest version at the start of each step. Files
are written to a temporary name and renamed, so a reader never sees half a policy.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

from resources.duckdb_file import default_data_dir
from resources.learned_policy import LearnedPolicy


class PolicyStore:
    def __init__(self, directory: "str | Path | None" = None):
        self.directory = Path(directory).expanduser() if directory else default_data_dir() / "routing_policy"

    def save(self, policy: LearnedPolicy) -> str:
        """Store ``policy``; returns its version (time of fit + content hash)."""
        blob = policy.to_bytes()
        version = f"{policy.fitted_at.replace(':', '').replace('-', '')[:15]}-{hashlib.sha256(blob).hexdigest()[:10]}"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._atomic_write(self.directory / f"{version}.pkl", blob)
        self._atomic_write(self.directory / "LATEST", version.encode())
        return version

    def latest_version(self) -> Optional[str]:
        pointer = self.directory / "LATEST"
        return pointer.read_text().strip() if pointer.is_file() else None

    def load(self, version: Optional[str] = None) -> Optional[tuple[str, LearnedPolicy]]:
        """The given or latest policy, or ``None`` when none has been fitted yet."""
        version = version or self.latest_version()
        if not version:
            return None
        path = self.directory / f"{version}.pkl"
        if not path.is_file():
            raise FileNotFoundError(f"routing policy version {version} not found under {self.directory}")
        return version, LearnedPolicy.from_bytes(path.read_bytes())

    @staticmethod
    def _atomic_write(path: Path, data: bytes) -> None:
        temporary = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
        temporary.write_bytes(data)
        os.replace(temporary, path)
