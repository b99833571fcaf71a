"""The simulated sites by name."""

from __future__ import annotations

from oncodiff.synth.brain import BRAIN
from oncodiff.synth.breast import BREAST
from oncodiff.synth.glioma import GLIOMA
from oncodiff.synth.lung import LUNG
from oncodiff.synth.site import Site

SITES: dict[str, Site] = {"brain": BRAIN, "lung": LUNG, "breast": BREAST, "glioma": GLIOMA}
