"""preprocess_cohort: validation first, a content-keyed cache outside the cohort, nothing half-written."""

import hashlib

import numpy as np
import pytest

from oncodiff.config import DataConfig
from oncodiff.data import preprocess as preprocess_module
from oncodiff.data import preprocess_cohort
from oncodiff.errors import CohortError, ConfigError

CONFIG_2D = DataConfig(crop_size=(16, 16))
CONFIG_3D = DataConfig(dims=3, crop_size=(12, 12, 6))


def snapshot(folder):
    """Every file and folder below ``folder`` with its content hash and modification time."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir",
                                     p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def _refuse_to_compute(*args, **kwargs):
    raise AssertionError("a cache hit must not recompute samples")


@pytest.mark.parametrize("dims", [2, 3])
def test_second_run_reads_the_cache(request, tmp_path, monkeypatch, dims):
    root = request.getfixturevalue(f"tiny_cohort_{dims}d")
    config = CONFIG_2D if dims == 2 else CONFIG_3D
    first = preprocess_cohort(root, config, cache_dir=tmp_path / "cache")
    assert not first.cache_hit and len(first) == 6
    monkeypatch.setattr(preprocess_module, "crop_baseline", _refuse_to_compute)
    monkeypatch.setattr(preprocess_module, "cut_followup", _refuse_to_compute)
    second = preprocess_cohort(root, config.model_copy(update={"flips": False, "val_fraction": 0.3}),
                               cache_dir=tmp_path / "cache")
    assert second.cache_hit and second.cache_path == first.cache_path
    for key, array in first.arrays.items():
        np.testing.assert_array_equal(second.arrays[key], array)
    assert [r.to_dict() for r in second.records] == [r.to_dict() for r in first.records]
    assert "cache hit" in str(second) and "6 samples" in str(second) and str(first.cache_path) in str(second)


def test_changed_inputs_or_options_miss_the_cache(tiny_cohort_2d, tmp_path):
    cache = tmp_path / "cache"
    first = preprocess_cohort(tiny_cohort_2d, CONFIG_2D, cache_dir=cache)
    other_option = preprocess_cohort(tiny_cohort_2d, CONFIG_2D.model_copy(update={"crop_margin": 0.5}), cache)
    assert not other_option.cache_hit and other_option.cache_path != first.cache_path
    image = tiny_cohort_2d / "P002" / "week6.nii.gz"
    other_cohort = tmp_path / "copy"
    import shutil

    shutil.copytree(tiny_cohort_2d, other_cohort)
    same_content = preprocess_cohort(other_cohort, CONFIG_2D, cache)
    assert same_content.cache_hit  # the key is the content, not the folder's path
    (other_cohort / "P002" / "week6.nii.gz").write_bytes((tiny_cohort_2d / "P001" / "week6.nii.gz").read_bytes())
    assert image.exists()
    assert not preprocess_cohort(other_cohort, CONFIG_2D, cache).cache_hit


def test_nothing_is_written_into_the_cohort(tiny_cohort_3d, tmp_path):
    before = snapshot(tiny_cohort_3d)
    preprocess_cohort(tiny_cohort_3d, CONFIG_3D, cache_dir=tmp_path / "cache")
    preprocess_cohort(tiny_cohort_3d, CONFIG_3D, cache_dir=tmp_path / "cache")
    assert snapshot(tiny_cohort_3d) == before
    with pytest.raises(ConfigError, match="inside the cohort folder"):
        preprocess_cohort(tiny_cohort_3d, CONFIG_3D, cache_dir=tiny_cohort_3d / "cache")
    assert snapshot(tiny_cohort_3d) == before


def test_default_cache_is_outside_the_cohort(tiny_cohort_2d, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    result = preprocess_cohort(tiny_cohort_2d, CONFIG_2D)
    assert result.cache_path.parent == tmp_path / "xdg" / "oncodiff"
    configured = preprocess_cohort(tiny_cohort_2d, CONFIG_2D.model_copy(update={"cache_dir": str(tmp_path / "cfg")}))
    assert configured.cache_path.parent == tmp_path / "cfg"


def test_invalid_cohort_raises_before_writing(tiny_cohort_2d, tmp_path, monkeypatch):
    (tiny_cohort_2d / "P002" / "week6.nii.gz").unlink()
    monkeypatch.setattr(preprocess_module, "crop_baseline", _refuse_to_compute)
    with pytest.raises(CohortError) as info:
        preprocess_cohort(tiny_cohort_2d, CONFIG_2D, cache_dir=tmp_path / "cache")
    assert any(p.file == "scans.csv" and p.column == "image" for p in info.value.problems)
    assert "P002/week6.nii.gz" in str(info.value)
    assert not (tmp_path / "cache").exists()


def test_a_failure_midway_leaves_no_entry(tiny_cohort_2d, tmp_path, monkeypatch):
    calls = []
    real = preprocess_module.cut_followup

    def fail_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(preprocess_module, "cut_followup", fail_on_third)  # reaches this process only
    with pytest.raises(OSError):
        preprocess_cohort(tiny_cohort_2d, CONFIG_2D.model_copy(update={"preprocess_workers": 1}),
                          cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_options_that_do_not_fit_the_cohort(tiny_cohort_2d, tiny_cohort_3d, tmp_path):
    with pytest.raises(ConfigError, match="2D scans"):
        preprocess_cohort(tiny_cohort_2d, CONFIG_3D, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="data.slices=tumor, largest"):
        preprocess_cohort(tiny_cohort_3d, CONFIG_2D, cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="data.spacing has 3 values"):
        preprocess_cohort(tiny_cohort_2d, CONFIG_2D.model_copy(update={"spacing": (1.0, 1.0, 1.0)}), tmp_path)


def test_samples_follow_the_contract(tiny_cohort_2d, tmp_path):
    result = preprocess_cohort(tiny_cohort_2d, CONFIG_2D, cache_dir=tmp_path / "cache")
    arrays = result.arrays
    assert arrays["pre"].shape == arrays["post"].shape == (6, 1, 16, 16) and arrays["pre"].dtype == np.float32
    assert arrays["anatomy"].shape == (6, 1, 16, 16)
    assert set(np.unique(arrays["tumor_mask"])) == {0, 1} and arrays["tumor_mask"].dtype == np.uint8
    # Percentile normalisation -> [0, 1]; the tumour (bright disc) is brighter than its surroundings.
    assert arrays["pre"].min() >= 0 and arrays["pre"].max() <= 1
    tumour = arrays["tumor_mask"].astype(bool)
    assert arrays["pre"][tumour].mean() > arrays["pre"][~tumour].mean() + 0.3
    # Responders (even rows) shrink, the others grow.
    change = arrays["post_mask"].sum(axis=(1, 2, 3)) / arrays["tumor_mask"].sum(axis=(1, 2, 3))
    assert np.all(change[::2] < 1) and np.all(change[1::2] > 1)
    assert [r.patient_id for r in result.records] == [f"P00{i}" for i in range(1, 7)]
    assert {r.timepoint for r in result.records} == {"week6"} and result.records[0].days == 42.0


def test_cli_preprocess_prints_the_result(tiny_cohort_2d, tmp_path):
    from typer.testing import CliRunner

    from oncodiff.cli import app

    args = ["preprocess", str(tiny_cohort_2d), "--preset", "demo", "--set", "data.crop_size=[16,16]",
            "--cache-dir", str(tmp_path / "cache")]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "6 samples from 6 patients" in first.output and "computed and cached" in first.output
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0 and "cache hit" in second.output
    wrong = CliRunner().invoke(app, args + ["--set", "data.dims=3", "--set", "data.crop_size=[8,8,8]"])
    assert wrong.exit_code == 2 and "2D scans" in wrong.output


def test_an_empty_baseline_mask_is_reported_not_a_crash(tiny_cohort_3d, tmp_path, monkeypatch):
    from oncodiff.cohort import load_cohort, read_image, write_image

    # validate_cohort rejects an empty baseline mask; preprocessing must still not crash on one.
    monkeypatch.setattr(preprocess_module, "load_cohort", lambda root: load_cohort(root, validate=False))
    path = tiny_cohort_3d / "P001" / "pre_gtv.nii.gz"
    mask = read_image(path)
    write_image(np.zeros_like(mask.array), mask, path)
    result = preprocess_cohort(tiny_cohort_3d, CONFIG_3D, cache_dir=tmp_path / "cache")
    assert len(result) == 6 and "P001, lesion L1: the baseline tumour mask" in str(result)
    slices = preprocess_cohort(tiny_cohort_3d, DataConfig(slices="tumor", crop_size=(8, 8)), tmp_path / "cache")
    assert "P001" not in {r.patient_id for r in slices.records} and "are left out" in str(slices)


def test_slices_below_min_tumor_voxels_leave_the_lesion_out(tiny_cohort_3d, tmp_path):
    config = DataConfig(slices="tumor", min_tumor_voxels=10_000, crop_size=(8, 8))
    result = preprocess_cohort(tiny_cohort_3d, config, cache_dir=tmp_path / "cache")
    assert len(result) == 0 and result.arrays["pre"].shape == (0, 1, 8, 8)
    assert str(result).count("no slice has 10000+ tumour voxels") == 6


# ---- workers: every core, or a Dask cluster, and the same cache ---------------------------------

def _entry(result):
    return ({key: array.tobytes() for key, array in result.arrays.items()},
            (result.cache_path / "samples.json").read_bytes())


def test_two_workers_write_the_cache_one_worker_writes_byte_for_byte(tiny_cohort_3d, tmp_path, capfd):
    """N4 and the registration measure run on every scan (MRI, registration auto): ITK's threads would change
    their last digits, one thread per lesion does not."""
    one = preprocess_cohort(tiny_cohort_3d, CONFIG_3D.model_copy(update={"preprocess_workers": 1}),
                            cache_dir=tmp_path / "one")
    capfd.readouterr()
    two = preprocess_cohort(tiny_cohort_3d, CONFIG_3D.model_copy(update={"preprocess_workers": 2}),
                            cache_dir=tmp_path / "two")
    assert one.cache_path.name == two.cache_path.name  # the worker count is not a preprocessing option
    assert all(r.steps["post_bias"] is not None for r in two.records)
    assert _entry(one) == _entry(two)
    progress = capfd.readouterr().err
    assert "6/6 lesions" in progress  # lesions counted as they finish on either worker


def test_the_dask_backend_writes_the_same_cache(tiny_cohort_2d, tmp_path):
    distributed = pytest.importorskip("distributed")
    local = preprocess_cohort(tiny_cohort_2d, CONFIG_2D.model_copy(update={"preprocess_workers": 1}),
                              cache_dir=tmp_path / "local")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        config = CONFIG_2D.model_copy(update={"scheduler": cluster.scheduler_address})
        on_cluster = preprocess_cohort(tiny_cohort_2d, config, cache_dir=tmp_path / "cluster")
        with distributed.Client(cluster) as client:
            ran_on = client.run(lambda: True)
    assert len(ran_on) == 2
    assert _entry(local) == _entry(on_cluster)


def test_an_unreachable_scheduler_is_a_clear_error(tiny_cohort_2d, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    from oncodiff.data import parallel

    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT_S", 1)
    config = CONFIG_2D.model_copy(update={"scheduler": "tcp://127.0.0.1:9"})
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        preprocess_cohort(tiny_cohort_2d, config, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_the_cli_passes_workers_and_scheduler_as_config_keys(tiny_cohort_2d, tmp_path):
    from typer.testing import CliRunner

    from oncodiff.cli import app

    result = CliRunner().invoke(app, ["preprocess", str(tiny_cohort_2d), "--workers", "2", "--set",
                                      "data.crop_size=[16,16]", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "6 samples" in result.output
    refused = CliRunner().invoke(app, ["preprocess", str(tiny_cohort_2d), "--workers", "0"])
    assert refused.exit_code == 2
