"""CPU tests run Triton kernels through its interpreter: switch it on before triton is imported.

Tests never write into the repository's shipped ``tuned_configs/`` nor into the real user config
directory: the user data directory points at a temporary one for the whole run (subprocesses
included), and a check at the end of the run fails if anything under ``tuned_configs/`` changed.
"""

import os
import tempfile
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

os.environ.pop("GEMM_CONFIG_DIR", None)
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="gemm-tests-data-")

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "tuned_configs"
SHIPPED_ROOTS = (SHIPPED, REPO / "engine_configs")


def _snapshot(roots) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(REPO)): (p.stat().st_size, p.stat().st_mtime_ns)
            for root in roots for p in root.rglob("*")}


@pytest.fixture(scope="session", autouse=True)
def shipped_configs_untouched():
    """Fail the run if any test wrote into the shipped tuned_configs/ or engine_configs/."""
    before = _snapshot(SHIPPED_ROOTS)
    yield
    after = _snapshot(SHIPPED_ROOTS)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"tests wrote into the shipped configs: {changed}"
