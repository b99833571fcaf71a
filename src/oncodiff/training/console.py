"""The console while training: oncodiff's own lines, a progress bar on a terminal (per-epoch lines elsewhere),
and none of the framework's start-up chatter unless asked for."""

from __future__ import annotations

import logging
import warnings

FRAMEWORK_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
# Warnings raised from inside Lightning (e.g. torch's _pytree deprecation as Lightning calls it); ours still show.
FRAMEWORK_MODULES = r"(lightning|pytorch_lightning|lightning_fabric)(\..*)?$"


def quiet_framework(verbose: bool = False) -> None:
    """Silence Lightning's info lines ("GPU available: ...", the AMP line, its logger advertisement) and the
    warnings raised from its code; ``verbose`` leaves them as Lightning prints them."""
    import lightning  # noqa: F401 - importing it sets its loggers up, which this then quiets

    if verbose:
        return
    for name in FRAMEWORK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module=FRAMEWORK_MODULES)
