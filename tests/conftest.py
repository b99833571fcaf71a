import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from factory import write_cohort  # noqa: E402


@pytest.fixture
def tiny_cohort_2d(tmp_path):
    return write_cohort(tmp_path / "cohort2d", dims=2)


@pytest.fixture
def tiny_cohort_3d(tmp_path):
    return write_cohort(tmp_path / "cohort3d", dims=3)
