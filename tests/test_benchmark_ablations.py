"""benchmarks/ablations.py trains the registry's chain: the stages in order, each from the runs it names."""

from __future__ import annotations

from pathlib import Path

from factory import load_benchmark


def test_immunodiff_chain_trains_the_registrys_stages_in_order(tmp_path, monkeypatch):
    ablations = load_benchmark("ablations")
    calls = []

    def run(self, name, preset, cohort, steps, overrides, splits_from=None):
        calls.append((name, preset, cohort.name, steps, overrides))
        return self.out / "runs" / name

    monkeypatch.setattr(ablations.Ablation, "run", run)
    ab = ablations.Ablation(tmp_path, seed=0)
    steps = {"encoders": 1, "ddpm": 2, "controlnet": 3, "stage2": 4}
    runs = ab.chain("immunodiff", ablations.IMMUNODIFF_RUNS, {"public": Path("public"), "treated": Path("treated")},
                    steps, ["x=1"])
    folder = tmp_path / "runs"
    assert calls == [
        ("encoders", "immunodiff-encoders", "public", 1, ["x=1"]),
        ("ddpm", "immunodiff-ddpm", "public", 2, ["x=1"]),
        ("controlnet", "immunodiff-controlnet", "public", 3,
         ["x=1", f"training.init_from={folder / 'ddpm'}", f"training.anatomy_from={folder / 'encoders'}"]),
        ("stage2", "immunodiff", "treated", 4, ["x=1", f"training.init_from={folder / 'controlnet'}"]),
    ]
    assert runs["immunodiff"] == folder / "stage2"
