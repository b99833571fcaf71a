"""oncodiff: predict post-treatment tumour scans with conditional diffusion models."""

import os

# CPU threads that wait at a barrier sleep instead of spinning (OpenMP reads this when torch loads, so it
# acts only where oncodiff is imported first, as by the `oncodiff` command; set it yourself to override).
# On a few cores shared with other jobs, spinning threads wait for a core another process holds, and a
# forward pass takes many times longer; benchmarks/README.md has the measured numbers.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
