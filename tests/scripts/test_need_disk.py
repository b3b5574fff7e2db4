"""The setup scripts' free-disk check (scripts/need_disk.sh), run by bash as the scripts run it."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _need(venv: Path, gb: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", f'set -euo pipefail; source scripts/need_disk.sh; need_disk setup "{venv}" {gb}; '
                           "echo installing"], cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_short_disk_fails_at_once_naming_the_venv_and_the_space(tmp_path: Path) -> None:
    # a venv whose parent folders do not exist yet: the check looks at the disk of the nearest existing one
    venv = tmp_path / "not" / "yet" / ".venv"
    r = _need(venv, 10**7)  # 10 PB
    assert r.returncode == 1 and r.stdout == ""  # nothing after the check ran
    assert f"setup: {venv} needs 10000000 GB free on its disk" in r.stderr and "GB are free" in r.stderr


def test_enough_disk_goes_on(tmp_path: Path) -> None:
    r = _need(tmp_path / ".venv", 0)
    assert r.returncode == 0 and r.stdout == "installing\n" and r.stderr == ""
