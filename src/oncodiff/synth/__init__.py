"""oncodiff.synth (see docs/design.md for what this package owns)."""
