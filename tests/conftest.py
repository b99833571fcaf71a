import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from factory import write_cohort  # noqa: E402


@pytest.fixture
def tiny_cohort_2d(tmp_path):
    return write_cohort(tmp_path / "cohort2d", dims=2)


@pytest.fixture
def tiny_cohort_3d(tmp_path):
    return write_cohort(tmp_path / "cohort3d", dims=3)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks on a shared 2-core machine run far faster on one thread than on two (spinning threads
    wait for a core another process holds). Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``; set before their module-scoped runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
