"""The parts of benchmarks/run.py (the speed benchmark): common settings and helpers, the reference loops,
the sampling and training benchmarks, peak memory, and the goals and tables."""
