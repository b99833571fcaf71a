"""The benchmarks: thin drivers over oncodiff's importable functions, each run from the repository root as

    python -m benchmarks.NAME --out OUT ...

A benchmark imports oncodiff (public names only) and, where it shares a table or a helper with another
benchmark, that benchmark as ``benchmarks.NAME``; never by editing the module search path. A helper that is product logic (a
user would want it on their own cohort) belongs in ``src/oncodiff``, not here. benchmarks/README.md lists them.
"""
