"""oncodiff: predict post-treatment tumour scans with conditional diffusion models."""

import os

# CPU threads that wait at a barrier sleep instead of spinning (OpenMP reads this when torch loads, so it
# acts only where oncodiff is imported first, as by the `oncodiff` command; set it yourself to override).
# On 2 cores shared with two other jobs, a bf16 forward of a 3-layer 64-channel conv net at batch 16
# took 147 ms with spinning threads and 55 ms with sleeping ones; benchmarks/README.md has the demo U-Net's
# numbers (2.4 s against 0.04 s per forward pass on a loaded machine).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
