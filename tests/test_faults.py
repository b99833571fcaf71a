"""Faults and hostile input through the CLI (docs/outputs.md): every refusal is one ``error:`` line that
names the thing, with no traceback, and leaves every input and every unrelated file byte-identical;
a process killed with SIGKILL at each stage of synth, train and predict leaves nothing that looks
complete, and running the command again finishes or refuses cleanly."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from factory import TINY_MODEL, edit_csv, write_cohort
from oncodiff.cli import app
from oncodiff.outputs import write_marker

TINY = [*TINY_MODEL, "data.crop_size=[16,16]", "training.max_steps=4",
        "training.samples_per_epoch=8", "training.batch_size=4", "training.max_minutes=null",
        "evaluation.segmenter_steps=10", "sampling.steps=2", "sampling.samples=3"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def checksums(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots``."""
    found = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            if path.is_file():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def refused(result, *names: str) -> str:
    """Assert a clean refusal: exit code 2, one ``error:`` line naming ``names``, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.splitlines()  # progress lines (preprocessing) may come first
    assert "Traceback" not in result.output and any(line.startswith("error: ") for line in lines), result.output
    for name in names:
        assert name in result.output, (name, result.output)
    return result.output


def singleton_cohort(root: Path, **kwargs) -> Path:
    """A tiny 2D cohort whose scans and masks are stored as (X, Y, 1) volumes, as a single DICOM slice is."""
    cohort = write_cohort(root, **kwargs)
    for path in cohort.rglob("*.nii.gz"):
        image = nib.load(path)
        nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj)[..., None], image.affine, image.header), path)
    return cohort


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    cohort = singleton_cohort(root / "cohort", n_patients=6)
    cache = root / "cache"
    common = sets(*TINY, f"data.cache_dir={cache}")
    result = invoke("train", "--cohort", cohort, "--out", root / "run", *common)
    assert result.exit_code == 0, result.output
    (root / "unrelated").mkdir()
    (root / "unrelated" / "thesis.txt").write_text("three years of work", encoding="utf-8")
    return {"root": root, "cohort": cohort, "run": root / "run", "cache": cache, "common": common}


@pytest.fixture
def untouched(trained):
    """Checksums of the cohort, the run and an unrelated folder must be the same after the test."""
    roots = (trained["cohort"], trained["run"], trained["root"] / "unrelated")
    before = checksums(*roots)
    yield
    assert checksums(*roots) == before


# ---- output folders ---------------------------------------------------------------------------------

def test_synth_overwrite_never_replaces_a_folder_it_did_not_write(trained, untouched, tmp_path, monkeypatch):
    unrelated = trained["root"] / "unrelated"
    refused(invoke("synth", "--out", unrelated, "--patients", 1, "--overwrite"), str(unrelated), "not empty")
    refused(invoke("synth", "--out", trained["cohort"], "--patients", 1, "--overwrite"), "not empty")
    monkeypatch.chdir(tmp_path)
    made = invoke("synth", "--out", "here", "--patients", 1)
    assert made.exit_code == 0, made.output
    monkeypatch.chdir(tmp_path / "here")  # its own cohort, but the working directory: never replaced
    refused(invoke("synth", "--out", ".", "--patients", 1, "--overwrite"), "working directory")
    assert (tmp_path / "here" / "cohort.yaml").is_file()
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")  # even an empty working directory is not renamed away
    refused(invoke("synth", "--out", ".", "--patients", 1), "working directory")


@pytest.mark.parametrize("verb", ["train", "predict", "evaluate"])
def test_bad_out_paths_are_error_lines(trained, untouched, verb, tmp_path):
    a_file = trained["root"] / "unrelated" / "thesis.txt"
    args = {"train": ["train", "--cohort", trained["cohort"], *trained["common"]],
            "predict": ["predict", "--model", trained["run"], "--cohort", trained["cohort"]],
            "evaluate": ["evaluate", "--model", trained["run"], "--cohort", trained["cohort"]]}[verb]
    refused(invoke(*args, "--out", a_file), str(a_file), "existing file")
    refused(invoke(*args, "--out", "/proc/oncodiff-out"), "/proc/oncodiff-out", "cannot be created")
    refused(invoke(*args, "--out", tmp_path / ("x" * 300)), "too long")
    refused(invoke(*args, "--out", trained["cohort"] / "out"), "inside the cohort folder")
    refused(invoke(*args, "--out", trained["run"] / "out"), "inside the run folder")
    refused(invoke(*args, "--out", trained["root"] / "unrelated"), "not empty")


def test_train_refuses_the_cohort_itself(trained, untouched):
    refused(invoke("train", "--cohort", trained["cohort"], "--out", trained["cohort"], *trained["common"]),
            "inside the cohort folder")


def test_report_never_overwrites_a_file_it_did_not_write(trained, untouched, tmp_path):
    from test_evaluation_report import write_evaluation

    evaluation, _ = write_evaluation(tmp_path, figures=False, curves=False, outcomes=False)
    write_marker(evaluation, "evaluation")  # as `oncodiff evaluate` leaves it
    other = write_cohort(tmp_path / "other", n_patients=1)
    before = checksums(other)
    refused(invoke("report", evaluation, "--out", other / "patients.csv"), "patients.csv", "not a report")
    refused(invoke("report", evaluation, "--out", trained["run"] / "model" / "config.json"), "config.json")
    refused(invoke("report", evaluation, "--out", other / "new.html"), "inside the cohort folder")
    assert checksums(other) == before
    for _ in range(2):  # a report oncodiff wrote may be written again
        assert invoke("report", evaluation, "--out", tmp_path / "r.html").exit_code == 0
    again = invoke("evaluate", "--model", trained["run"], "--cohort", trained["cohort"], "--out", evaluation)
    refused(again, "--overwrite")


def test_predict_again_replaces_instead_of_mixing(trained, untouched, tmp_path):
    out = tmp_path / "predictions"
    first = invoke("predict", "--model", trained["run"], "--cohort", trained["cohort"], "--out", out,
                   "--patient", "P001", "--patient", "P002", "--samples", 3)
    assert first.exit_code == 0, first.output
    refused(invoke("predict", "--model", trained["run"], "--cohort", trained["cohort"], "--out", out,
                   "--patient", "P001", "--samples", 2), "--overwrite")
    again = invoke("predict", "--model", trained["run"], "--cohort", trained["cohort"], "--out", out,
                   "--patient", "P001", "--samples", 2, "--overwrite")
    assert again.exit_code == 0, again.output
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == ["P001_L1_week6"]  # P002's folder of the first run is gone
    assert sorted(p.name for p in (out / folders[0]).glob("sample_*")) == ["sample_00.nii.gz", "sample_01.nii.gz"]
    assert [p.name for p in tmp_path.iterdir()] == ["predictions"]  # no partial folder left beside it


def test_predictions_keep_the_singleton_axis_of_their_scan(trained, tmp_path):
    out = tmp_path / "p"
    assert invoke("predict", "--model", trained["run"], "--cohort", trained["cohort"], "--out", out,
                  "--patient", "P001", "--samples", 2).exit_code == 0
    stored = nib.load(trained["cohort"] / "P001" / "pre.nii.gz").shape
    assert stored == (32, 32, 1)
    for name in ("mean", "std", "sample_00"):
        assert nib.load(out / "P001_L1_week6" / f"{name}.nii.gz").shape == stored


# ---- the export ---------------------------------------------------------------------------------------

def test_the_export_is_group_readable_and_records_its_weights(trained):
    model = trained["run"] / "model"
    umask = os.umask(0)
    os.umask(umask)
    assert (model / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    meta = json.loads((model / "config.json").read_text(encoding="utf-8"))
    assert meta["source_run"] == str(trained["run"].resolve())
    assert meta["weights_sha256"] == hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()


def _export_copy(trained, tmp_path) -> Path:
    copy = tmp_path / "export"
    copy.mkdir()
    for name in ("model.safetensors", "config.json", "segmenter.safetensors"):
        if (trained["run"] / "model" / name).is_file():
            (copy / name).write_bytes((trained["run"] / "model" / name).read_bytes())
    return copy


def _edit_meta(folder: Path, change) -> None:
    meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    change(meta)
    (folder / "config.json").write_text(json.dumps(meta), encoding="utf-8")


@pytest.mark.parametrize("damage", ["truncated", "empty", "architecture", "swapped", "not json"])
def test_damaged_or_mismatched_model_files_are_error_lines(trained, untouched, tmp_path, damage):
    copy = _export_copy(trained, tmp_path)
    weights = copy / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        _edit_meta(copy, lambda m: m.pop("weights_sha256"))  # an old export: safetensors itself must refuse
    elif damage == "empty":
        weights.write_bytes(b"")
        _edit_meta(copy, lambda m: m.pop("weights_sha256"))
    elif damage == "architecture":
        _edit_meta(copy, lambda m: m["config"]["model"].update(channels=[16, 32], num_head_channels=16))
    elif damage == "swapped":  # same architecture, other weights (another run's)
        blob = bytearray(weights.read_bytes())
        blob[-8:] = bytes(8)
        weights.write_bytes(bytes(blob))
    else:
        (copy / "config.json").write_text("{not json", encoding="utf-8")
    out = refused(invoke("predict", "--model", copy, "--cohort", trained["cohort"], "--out", tmp_path / "p",
                         "--patient", "P001"), str(copy))
    assert len(out.splitlines()) <= 2
    expected = {"truncated": "safetensors", "empty": "safetensors", "architecture": "does not fit",
                "swapped": "SHA-256", "not json": "cannot be read"}[damage]
    assert expected in out
    assert not (tmp_path / "p").exists()


def test_an_export_without_a_checksum_still_loads(trained, tmp_path):
    from oncodiff.pipeline.export import load_export

    copy = _export_copy(trained, tmp_path)
    _edit_meta(copy, lambda m: m.pop("weights_sha256"))
    assert load_export(copy, device="cpu").layout.spatial_dims == 2


# ---- validate: geometry and values ------------------------------------------------------------------

def _rewrite(path: Path, affine=None, array=None) -> None:
    """Rewrite a NIfTI file with another voxel array or another (possibly broken) sform affine."""
    image = nib.load(path)
    data = np.asanyarray(image.dataobj) if array is None else array
    new = nib.Nifti1Image(data, image.affine if affine is None else None)
    if affine is not None:  # through the header: nibabel would refuse or repair a broken affine given directly
        new.header.set_qform(None, code=0)
        new.header.set_sform(affine, code=1)
    nib.save(new, path)


def _scaled(affine: np.ndarray, spacing: float = 1.0, shift: float = 0.0) -> np.ndarray:
    out = affine.copy()
    out[:3, :3] *= spacing
    out[0, 3] += shift
    return out


@pytest.mark.parametrize("case", ["spacing", "shift", "absolute", "escaping", "symlink out", "linked folder", "slash id",
                                  "dot id", "near label", "three labels", "negative label", "semicolon", "nan affine",
                                  "singular affine"])
def test_validate_refuses_bad_geometry_values_and_paths(tmp_path, case):
    cohort = write_cohort(tmp_path / "c", n_patients=3)
    outside = tmp_path / "outside.nii.gz"
    mask = cohort / "P001" / "pre_gtv.nii.gz"
    expected = {"spacing": "spacing (2, 2", "shift": "80 mm", "absolute": "absolute path", "escaping": "climbs out",
                "symlink out": f"P001/pre.nii.gz: resolves through a symbolic link to {outside.resolve()}, outside the "
                               "cohort folder", "linked folder": "resolves through a symbolic link to",
                "slash id": "folder name", "dot id": "starts with '.'", "near label": "'Responder' in rows 3",
                "three labels": "3 distinct response values", "negative label": "neither", "semicolon": "semicolons",
                "nan affine": "NaN", "singular affine": "singular"}[case]
    affine = nib.load(mask).affine
    if case == "spacing":
        _rewrite(mask, affine=_scaled(affine, spacing=2.0))
    elif case == "shift":
        _rewrite(mask, affine=_scaled(affine, shift=80.0))
    elif case in ("absolute", "escaping"):
        outside.write_bytes((cohort / "P001" / "pre.nii.gz").read_bytes())
        edit_csv(cohort, "scans.csv", 1, "image", str(outside) if case == "absolute" else "../outside.nii.gz")
    elif case == "symlink out":
        outside.write_bytes((cohort / "P001" / "pre.nii.gz").read_bytes())
        (cohort / "P001" / "pre.nii.gz").unlink()
        (cohort / "P001" / "pre.nii.gz").symlink_to(outside)
    elif case == "linked folder":
        (cohort / "P002").rename(tmp_path / "P002")
        (cohort / "P002").symlink_to(tmp_path / "P002", target_is_directory=True)
    elif case in ("slash id", "dot id"):
        bad = "../../x" if case == "slash id" else ".hidden"
        edit_csv(cohort, "patients.csv", 1, "patient_id", bad)
        scans = pd.read_csv(cohort / "scans.csv", dtype=str, keep_default_na=False)
        scans.loc[scans.patient_id == "P001", "patient_id"] = bad
        scans.to_csv(cohort / "scans.csv", index=False)
    elif case == "near label":
        edit_csv(cohort, "patients.csv", 3, "response", "Responder")
    elif case == "three labels":
        edit_csv(cohort, "patients.csv", 3, "response", "partial")
    elif case == "negative label":
        spec = yaml.safe_load((cohort / "cohort.yaml").read_text(encoding="utf-8"))
        spec["outcomes"]["response"]["negative"] = "non-responder"
        (cohort / "cohort.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
        edit_csv(cohort, "patients.csv", 2, "response", "nonresponder")
    elif case == "semicolon":
        table = pd.read_csv(cohort / "scans.csv", dtype=str, keep_default_na=False)
        table.to_csv(cohort / "scans.csv", index=False, sep=";")
    elif case == "nan affine":
        _rewrite(cohort / "P002" / "pre.nii.gz", affine=np.full((4, 4), np.nan))
    else:
        _rewrite(cohort / "P002" / "pre.nii.gz", affine=np.diag([1.0, 0.0, 1.0, 1.0]))
    before = checksums(cohort)
    result = invoke("validate", cohort)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert expected in result.output, result.output
    assert checksums(cohort) == before


def _regrid(cohort: Path, patient: str, shape: tuple[int, ...] | None = None, spacing: float = 1.0) -> None:
    """Give every scan and mask of ``patient`` another voxel grid: cut to ``shape`` and/or ``spacing`` mm voxels."""
    for path in (cohort / patient).glob("*.nii.gz"):
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
        if shape is not None:
            data = np.ascontiguousarray(data[tuple(slice(0, n) for n in shape)])
            data.flat[0] = 1  # a mask keeps a voxel
        _rewrite(path, affine=_scaled(image.affine, spacing=spacing), array=data)


@pytest.mark.parametrize("case, expected", [
    ("1x1 image", "has 1 x 1 voxels; preprocessing needs at least 4 along each axis"),
    ("3-voxel axis", "has 32 x 3 voxels"),
    ("zero spacing", "singular voxel-to-world affine"),
    ("spacing in metres", "voxel size of (0.001, 0.001) mm, outside 0.01..100 mm"),
    ("absurd spacing", "voxel size of (1000, 1000) mm"),
])
def test_a_scan_that_cannot_be_preprocessed_is_refused_by_validate_and_train(trained, tmp_path, case, expected):
    cohort = write_cohort(tmp_path / "c", n_patients=3)
    grid = {"1x1 image": {"shape": (1, 1)}, "3-voxel axis": {"shape": (32, 3)}, "zero spacing": {"spacing": 0.0},
            "spacing in metres": {"spacing": 0.001}, "absurd spacing": {"spacing": 1000.0}}[case]
    _regrid(cohort, "P002", **grid)
    before = checksums(cohort)
    result = invoke("validate", cohort)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert expected in result.output and "P002/pre.nii.gz" in result.output, result.output
    refused(invoke("train", "--cohort", cohort, "--out", tmp_path / "run", *trained["common"]), expected)
    assert checksums(cohort) == before and not (tmp_path / "run").exists()


def test_a_scan_registration_cannot_handle_is_an_error_line_naming_it(trained, tmp_path):
    """Valid, but a 1.6 mm field of view is too small for the rigid registration: the verb says so, no traceback."""
    cohort = write_cohort(tmp_path / "c", n_patients=3)
    for patient in ("P001", "P002", "P003"):
        _regrid(cohort, patient, spacing=0.05)
    assert invoke("validate", cohort).exit_code == 0
    refused(invoke("train", "--cohort", cohort, "--out", tmp_path / "run", *trained["common"],
                   "--set", "data.registration=rigid"), "registration to its baseline scan failed", "week6.nii.gz")


def test_files_linked_from_outside_are_accepted_only_when_asked(tmp_path, monkeypatch):
    from oncodiff.cohort import load_cohort
    from oncodiff.errors import CohortError

    cohort = write_cohort(tmp_path / "c", n_patients=3)
    scan = cohort / "P001" / "pre.nii.gz"
    (cohort / "P001" / "copy.nii.gz").write_bytes(scan.read_bytes())
    scan.unlink()
    scan.symlink_to(cohort / "P001" / "copy.nii.gz")  # a link that stays inside the cohort is fine
    assert invoke("validate", cohort).exit_code == 0
    outside = tmp_path / "archive" / "pre.nii.gz"
    outside.parent.mkdir()
    (cohort / "P001" / "copy.nii.gz").rename(outside)
    scan.unlink()
    scan.symlink_to(outside)  # a cohort as a farm of links to an archive
    assert invoke("validate", cohort).exit_code == 1
    allowed = invoke("validate", cohort, "--allow-external")
    assert allowed.exit_code == 0 and f"warning: scans.csv, row 1, column 'image': P001/pre.nii.gz: resolves through " \
        f"a symbolic link to {outside.resolve()}" in allowed.output, allowed.output
    monkeypatch.delenv("ONCODIFF_ALLOW_EXTERNAL", raising=False)
    with pytest.raises(CohortError, match="outside the cohort folder"):
        load_cohort(cohort)
    monkeypatch.setenv("ONCODIFF_ALLOW_EXTERNAL", "1")  # what every verb reads
    assert load_cohort(cohort).root == cohort


def test_validate_warns_about_blank_scans_whole_masks_and_same_day_followups(tmp_path):
    cohort = write_cohort(tmp_path / "c", n_patients=3, followups=(("week6", 42), ("week7", 49)))
    _rewrite(cohort / "P001" / "week6.nii.gz", array=np.zeros((32, 32), dtype=np.float32))
    _rewrite(cohort / "P002" / "pre_gtv.nii.gz", array=np.ones((32, 32), dtype=np.uint8))
    edit_csv(cohort, "scans.csv", 3, "days", 42)  # P001 week7 on week6's day
    result = invoke("validate", cohort)
    assert result.exit_code == 0, result.output
    assert "is blank" in result.output and "every voxel as tumour" in result.output
    assert "two follow-ups on day 42" in result.output


def test_a_negative_label_in_cohort_yaml_is_optional_and_exact(tmp_path):
    cohort = write_cohort(tmp_path / "c", n_patients=3)
    spec = yaml.safe_load((cohort / "cohort.yaml").read_text(encoding="utf-8"))
    spec["outcomes"]["response"]["negative"] = "non-responder"
    (cohort / "cohort.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    assert invoke("validate", cohort).exit_code == 0


def test_train_refuses_an_invalid_cohort_and_an_oversized_config_before_making_the_run(trained, tmp_path):
    cohort = write_cohort(tmp_path / "c", n_patients=3)
    _rewrite(cohort / "P002" / "pre.nii.gz", affine=np.full((4, 4), np.nan))
    refused(invoke("train", "--cohort", cohort, "--out", tmp_path / "run", *trained["common"]), "NaN")
    big = sets("data.crop_size=[512,512]", "training.batch_size=16")
    out = refused(invoke("train", "--cohort", trained["cohort"], "--out", tmp_path / "run", *trained["common"], *big),
                  "training.batch_size", "data.crop_size", "GiB")
    assert "lower" in out
    assert not (tmp_path / "run").exists()


# ---- kill -9 at each stage -------------------------------------------------------------------------

@contextmanager
def paused_at(target: str, when: str, args: list, tmp_path: Path):
    """Run ``oncodiff ARGS`` in a child process (forked: no second import of torch) until it reaches ``target``
    (module.function; "before" it runs, or "after" its first call returns) and pauses there; yields the child's
    pid, then kills it with SIGKILL."""
    module_name, _, attr = target.rpartition(".")
    module = importlib.import_module(module_name)
    ready = tmp_path / f"ready-{time.monotonic_ns()}"
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            original = getattr(module, attr)

            def pause(*a, **k):
                result = original(*a, **k) if when == "after" else None
                ready.write_text(str(os.getpid()))
                time.sleep(600)
                return result

            setattr(module, attr, pause)
            app([str(a) for a in args], prog_name="oncodiff", standalone_mode=False)
        finally:
            os._exit(3)
    try:
        deadline = time.monotonic() + 240
        while not ready.exists():
            done, status = os.waitpid(pid, os.WNOHANG)
            assert done == 0, f"oncodiff {args[0]} ended (status {status}) before reaching {target}"
            assert time.monotonic() < deadline, f"oncodiff {args[0]} never reached {target}"
            time.sleep(0.02)
        yield pid
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def killed_at(target: str, when: str, args: list, tmp_path: Path) -> None:
    with paused_at(target, when, args, tmp_path):
        pass


def test_synth_killed_leaves_no_cohort_and_runs_again(tmp_path):
    out = tmp_path / "cohort"
    killed_at("oncodiff.synth.writer._write_tables", "before", ["synth", "--out", out, "--patients", 2], tmp_path)
    assert not out.exists()
    assert invoke("synth", "--out", out, "--patients", 2).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("ready")) == ["cohort"]


def test_train_and_predict_killed_at_each_stage(trained, tmp_path):
    cohort, run = trained["cohort"], tmp_path / "run"
    args = ["train", "--cohort", cohort, "--out", run, *trained["common"]]
    before = checksums(cohort)
    # 1. while preprocessing (before the memory check): no run folder yet
    killed_at("oncodiff.training.train.check_memory", "before", args, tmp_path)
    assert not run.exists()
    # 2. before the first checkpoint, the lock held by a live process, then by a dead one
    with paused_at("oncodiff.training.train._plan_steps", "after", args, tmp_path) as pid:
        refused(invoke(*args, "--resume"), "in use by", f"pid {pid}")
        refused(invoke(*args, "--overwrite"), "in use by")
        refused(invoke("predict", "--model", run, "--cohort", cohort, "--out", tmp_path / "p"), "being written")
        refused(invoke("calibrate", "--model", run, "--cohort", cohort), "in use by")
    refused(invoke(*args), "before its first checkpoint", "--overwrite")
    refused(invoke(*args, "--resume"), "no checkpoint", "--overwrite")
    refused(invoke("predict", "--model", run, "--cohort", cohort, "--out", tmp_path / "p"),
            "unfinished training run", "--resume")
    # 3. after training, before the export: --overwrite takes the stale lock over and starts again
    killed_at("oncodiff.training.train._finish", "before", [*args, "--overwrite"], tmp_path)
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "model").exists()
    refused(invoke("evaluate", "--model", run, "--cohort", cohort, "--out", tmp_path / "e"), "unfinished")
    # 4. while calibrating: the export is whole, its calibration named unfinished
    killed_at("oncodiff.training.train._calibrate", "before", [*args, "--resume"], tmp_path)
    assert json.loads((run / ".oncodiff-output.json").read_text())["state"] == "calibrating"
    predicted = invoke("predict", "--model", run, "--cohort", cohort, "--out", tmp_path / "p", "--patient", "P001")
    assert predicted.exit_code == 0, predicted.output
    note = json.loads((tmp_path / "p" / "summary.json").read_text())["interval_calibration"]
    assert "did not finish" in note and "oncodiff calibrate" in note
    assert invoke("calibrate", "--model", run, "--cohort", cohort).exit_code == 0
    assert json.loads((run / ".oncodiff-output.json").read_text())["state"] == "complete"
    # 5. predict killed after its first case: no half-written output; a rerun writes it whole
    out = tmp_path / "again"
    killed_at("oncodiff.pipeline.predict.write_follow_up", "after",
              ["predict", "--model", run, "--cohort", cohort, "--out", out, "--patient", "P001", "--patient", "P002"],
              tmp_path)
    assert not out.exists()
    done = invoke("predict", "--model", run, "--cohort", cohort, "--out", out, "--patient", "P001", "--patient", "P002")
    assert done.exit_code == 0, done.output
    assert len(json.loads((out / "summary.json").read_text())["cases"]) == 2
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert checksums(cohort) == before


def test_a_single_dicom_slice_is_written_back_with_its_singleton_axis():
    from pydicom.data import get_testdata_file

    from oncodiff.cohort.io import read_image, stored_shape, with_stored_shape

    path = get_testdata_file("MR_small.dcm")
    image = read_image(path)
    assert image.shape == (64, 64) and stored_shape(path) == (64, 64, 1)
    assert with_stored_shape(image.array, stored_shape(path)).shape == (64, 64, 1)
    assert with_stored_shape(image.array, (64, 64)).shape == (64, 64)
