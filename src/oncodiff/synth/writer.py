"""Write a synthetic cohort folder (docs/dataset-format.md) atomically and byte-for-byte reproducibly.

Layout::

    OUT/cohort.yaml, patients.csv, scans.csv      the cohort, as any user's
    OUT/counterfactuals.csv                        follow-ups under the opposite response class (not for training)
    OUT/truth/patients.csv, truth/scans.csv        latent parameters, uncensored death day, sizes, drift, shifts
                                                   (clinical acquisition: each scan's motion, grid, gain, bias, noise)
    OUT/truth/P0001/<timepoint>[_gtv].nii.gz       clinical acquisition: the clean scan and its GTV in the baseline's
                                                   space (also cf_<timepoint>), what preprocessing should recover
    OUT/P0001/pre.nii.gz, pre_gtv.nii.gz, <anatomy>.nii.gz, <timepoint>[_gtv].nii.gz, cf_<timepoint>[_gtv].nii.gz

Everything is written into a hidden sibling folder that is renamed to OUT at the end, so a failure
never leaves half a cohort (oncodiff/outputs.py: the --out rules, the marker --overwrite looks for).
nibabel writes .nii.gz with a zero gzip timestamp, so equal arrays give equal bytes
(tests/test_synth_writer.py checks it).
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from oncodiff.cohort import write_image
from oncodiff.cohort.schema import COHORT_YAML, COUNTERFACTUALS_CSV, PATIENTS_CSV, SCANS_CSV
from oncodiff.errors import OncodiffError
from oncodiff.synth.acquisition import ACQUISITIONS
from oncodiff.outputs import check_output, staged_folder
from oncodiff.synth.simulate import LABELS, TUMOR_LABELS, PatientRecord, Scan, simulate_patient, with_interim
from oncodiff.synth.site import Site

LESION_ID = "L1"


def _cell(value):
    """CSV cell: '' for missing, integers without '.0', floats rounded to 6 significant digits."""
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else float(f"{float(value):.6g}")
    return value


def _write_scans(root: Path, record: PatientRecord, scans: tuple[Scan, ...], prefix: str) -> list[dict]:
    rows = []
    for scan in scans:
        stem = f"{record.patient_id}/{prefix}{scan.timepoint}"
        image, mask = f"{stem}.nii.gz", f"{stem}_gtv.nii.gz"
        affine = record.affine if scan.affine is None else scan.affine
        write_image(scan.image, affine, root / image)
        write_image(scan.mask, affine, root / mask)
        if scan.truth_image is not None:  # clinical acquisition: the clean scan in the baseline's space
            write_image(scan.truth_image, record.affine, root / "truth" / image)
            write_image(scan.truth_mask, record.affine, root / "truth" / mask)
        row = {"patient_id": record.patient_id, "lesion_id": LESION_ID, "timepoint": scan.timepoint,
               "days": scan.days, "image": image, "tumor_mask": mask}
        if scan.labels is not None:  # --sequences: one file per sequence, and the tumour's label map
            write_image(scan.labels, affine, root / f"{stem}_seg.nii.gz")
            row["tumor_labels"] = f"{stem}_seg.nii.gz"
            row["sequences"] = {}
            for name, array in scan.sequences.items():
                if name not in scan.missing:
                    write_image(array, affine, root / f"{stem}_{name}.nii.gz")
                row["sequences"][name] = "" if name in scan.missing else f"{stem}_{name}.nii.gz"
        rows.append(row)
    return rows


def _scans_csv_row(row: dict, sequences: tuple[str, ...]) -> dict:
    """A scans.csv row: format 1 as written, or with ``sequences`` the image:NAME columns (the primary first)
    and the tumour as its label map."""
    if not sequences:
        return row
    out = {k: v for k, v in row.items() if k not in ("image", "tumor_mask", "sequences", "tumor_labels")}
    out[f"image:{sequences[0]}"] = row["image"]
    out |= {f"image:{name}": path for name, path in row["sequences"].items()}
    out["tumor_labels"] = row["tumor_labels"]
    return out


def _truth_scan_rows(record: PatientRecord, scans: tuple[Scan, ...], counterfactual: bool) -> list[dict]:
    prefix = "cf_" if counterfactual else ""
    return [{"patient_id": record.patient_id, "lesion_id": LESION_ID, "timepoint": s.timepoint, "days": s.days,
             "counterfactual": int(counterfactual), "size": _cell(s.size), "drift_mm": _cell(s.drift_mm),
             **{f"shift_mm_{axis}": _cell(v) for axis, v in zip("xyz", s.shift_mm)},
             **{k: _cell(v) for k, v in s.acquisition.items()},
             **({"truth_image": f"truth/{record.patient_id}/{prefix}{s.timepoint}.nii.gz",
                 "truth_mask": f"truth/{record.patient_id}/{prefix}{s.timepoint}_gtv.nii.gz"}
                if s.truth_image is not None else {})} for s in scans]


def _write_patient(site: Site, index: int, seed: int, dims: int, misalign_mm: float, root: Path,
                   treated: bool = True, acquisition: str = "ideal", sequences: tuple[str, ...] = ()) -> dict:
    """Simulate one patient, write its images, return its table rows."""
    record = simulate_patient(site, index, seed, dims, misalign_mm, treated, acquisition, sequences)
    positive, negative = site.response_values
    scan_rows = _write_scans(root, record, record.scans, "")
    for name, mask in record.anatomy.items():
        write_image(mask, record.affine, root / record.patient_id / f"{name}.nii.gz")
    for row in scan_rows:
        is_baseline = row["timepoint"] == site.baseline.label
        for name in site.anatomy_names:
            row[f"anatomy:{name}"] = f"{record.patient_id}/{name}.nii.gz" if is_baseline else ""
    cf_label = positive if record.cf_label else negative
    cf_rows = [{**{k: row[k] for k in ("patient_id", "lesion_id", "timepoint", "days")}, "response": cf_label,
                "image": row["image"], "tumor_mask": row["tumor_mask"]}
               for row in _write_scans(root, record, record.counterfactuals, "cf_")]
    response = {site.response_column: positive if record.label else negative} if treated else {}
    patient = {"patient_id": record.patient_id, **{k: _cell(v) for k, v in record.clinical.items()}, **response,
               "os_days": record.survival_days, "death": record.death}
    truth = {"patient_id": record.patient_id, **{k: _cell(v) for k, v in record.truth.items()}}
    truth_scans = _truth_scan_rows(record, record.scans, False) + _truth_scan_rows(record, record.counterfactuals, True)
    scan_rows = [_scans_csv_row(row, sequences) for row in scan_rows]
    return {"patient": patient, "scans": scan_rows, "counterfactuals": cf_rows, "truth": truth,
            "truth_scans": truth_scans}


def cohort_spec(site: Site, dims: int, treated: bool = True, sequences: tuple[str, ...] = ()) -> dict:
    """The cohort.yaml content for a synthetic cohort of ``site`` (untreated: no response outcome); with
    ``sequences`` format 2 (the first sequence primary, label maps necrosis/oedema/enhancing)."""
    positive, _ = site.response_values
    outcomes = {"response": {"column": site.response_column, "positive": positive}} if treated else {}
    format2 = {"sequences": list(sequences), "primary": sequences[0], "labels": dict(LABELS),
               "tumor": list(TUMOR_LABELS)} if sequences else {}
    return {
        "format": 2 if sequences else 1, "name": f"synthetic-{site.name}-{dims}d" + ("" if treated else "-untreated"),
        "modality": site.modality, "baseline": site.baseline.label, "clinical": [dict(v) for v in site.clinical_spec],
        "outcomes": {**outcomes, "survival": {"time": "os_days", "event": "death"}},
        "anatomy": list(site.anatomy_names), **format2,
    }


def _write_tables(root: Path, site: Site, dims: int, seed: int, rows: list[dict], treated: bool = True,
                  acquisition: str = "ideal", sequences: tuple[str, ...] = ()) -> None:
    kind = "" if treated else "untreated (natural growth, no counterfactuals) "
    how = "" if acquisition == "ideal" else f", {acquisition} acquisition"
    header = (f"# Synthetic {kind}{site.name} cohort ({dims}D{how}) written by `oncodiff synth`, seed {seed}.\n"
              "# Counterfactual follow-ups: counterfactuals.csv (never train on them); latent truth: truth/.\n"
              "# Generative model: docs/synthetic-cohorts.md\n")
    spec = yaml.safe_dump(cohort_spec(site, dims, treated, sequences), sort_keys=False)
    (root / COHORT_YAML).write_text(header + spec, encoding="utf-8")
    (root / "truth").mkdir(exist_ok=True)
    tables = {PATIENTS_CSV: "patient", SCANS_CSV: "scans", COUNTERFACTUALS_CSV: "counterfactuals",
              "truth/patients.csv": "truth", "truth/scans.csv": "truth_scans"}
    for name, key in tables.items():
        items = [r[key] for r in rows]
        flat = items if isinstance(items[0], dict) else [row for group in items for row in group]
        if flat:  # untreated cohorts have no counterfactuals
            pd.DataFrame(flat).to_csv(root / name, index=False, lineterminator="\n")


def _check_options(site: str, n_patients: int, dims: int, misalign_mm: float, workers: int,
                   acquisition: str = "ideal", sequences: tuple[str, ...] = (), interim: tuple[int, ...] = ()) -> Site:
    from oncodiff.synth.registry import SITES

    if site not in SITES:
        raise ValueError(f"site must be one of {', '.join(SITES)}; got {site!r}")
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3; got {dims!r}")
    if n_patients < 1:
        raise ValueError(f"n_patients must be at least 1; got {n_patients}")
    if misalign_mm < 0:
        raise ValueError(f"misalign_mm must be >= 0; got {misalign_mm}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1; got {workers}")
    if acquisition not in ACQUISITIONS:
        raise ValueError(f"acquisition must be one of {', '.join(ACQUISITIONS)}; got {acquisition!r}")
    model = SITES[site]
    if sequences and not model.contrasts:
        raise ValueError(f"--sequences: the {site} site renders one image per scan; sequences are simulated for "
                         f"{', '.join(n for n, s in SITES.items() if s.contrasts)}")
    if len(set(sequences)) != len(sequences):
        raise ValueError(f"--sequences lists a sequence twice: {', '.join(sequences)}")
    for name in sequences:
        model.contrast(name)  # raises for an unknown name, listing the known ones
    return with_interim(model, tuple(interim))


def synthesize(
    site: str, n_patients: int, dims: int, seed: int, out: Path, overwrite: bool = False, *,
    misalign_mm: float = 0.0, workers: int = 1, treated: bool = True, acquisition: str = "ideal",
    noise: bool = True, sequences: tuple[str, ...] = (), interim: tuple[int, ...] = (),
) -> Path:
    """Write a synthetic cohort of ``n_patients`` to the new folder ``out`` and return its path.

    site: brain | lung | breast; dims: 2 (slices, or a MIP for breast) or 3 (volumes). The same
    arguments give byte-identical files, whatever ``workers`` (processes) is. ``misalign_mm`` > 0
    shifts every follow-up (and its counterfactual) rigidly by that many mm in a random direction,
    recorded in truth/scans.csv, for registration tests. ``treated=False`` writes an untreated cohort
    (natural growth, patients U0001..., other patients than the treated cohort of the same seed, survival
    but no response outcome, no counterfactuals): a pre-training cohort "without treatment" (ImmunoDiff).
    ``acquisition="clinical"`` acquires each scan as a clinic would (synth/acquisition.py: motion, thick
    slices, gain and offset, bias field, noise, missing clinical values; ``misalign_mm`` > 0 then sets the
    translation's length) and writes the clean, baseline-aligned scans under truth/. ``noise=False`` writes the
    same cohort (same seed: same patients, anatomy, courses, bias fields, acquisitions) without scanner noise:
    what a prediction could reach that knew everything but the noise (``benchmarks/presets.py``).
    ``sequences`` (brain: t1c, t1, t2, flair) renders every scan in each MRI sequence, each with its own contrast
    for the tissue, the enhancing rim, the necrotic core and the oedema, and writes format 2: one ``image:NAME``
    column per sequence (the first is the primary), the tumour as a label map (necrosis 1, oedema 2, enhancing 3;
    the tumour is necrosis + enhancing, the GTV). With the clinical acquisition each non-primary sequence of a scan
    is missing with probability 8 %. ``interim`` adds scans during treatment on those days (``day<N>``), whose
    early change carries the response partly (simulate.py's ``with_interim``); the other scans keep their draws.
    """
    sequences, interim = tuple(sequences), tuple(interim)
    site_model = _check_options(site, n_patients, dims, misalign_mm, workers, acquisition, sequences, interim)
    if not noise:  # the noise generators are drawn from all the same, so every other draw stays the same
        site_model = dataclasses.replace(site_model, noise=(0.0, 0.0))
    out = check_output(out, "cohort", overwrite)
    with staged_folder(out, "cohort") as partial:
        jobs = [(site_model, i, seed, dims, misalign_mm, partial, treated, acquisition, sequences)
                for i in range(n_patients)]
        if workers == 1:
            rows = [_write_patient(*job) for job in jobs]
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                rows = list(pool.map(_write_patient, *zip(*jobs)))
        _write_tables(partial, site_model, dims, seed, rows, treated, acquisition, sequences)
    return out
