"""The viewer's answers, independent of HTTP: the patient list, a case's layers, what-if jobs and exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oncodiff.cohort import load_cohort, read_image, write_image
from oncodiff.data.clinical import as_text, is_missing
from oncodiff.errors import OncodiffError
from oncodiff.runs import RunFolder
from oncodiff.view.catalog import PredictionSet, case_layers, case_slot, geometry, summary_row, timeline
from oncodiff.view.folders import ViewerFolders
from oncodiff.view.jobs import Job, JobQueue
from oncodiff.view.whatif import (
    CACHE_LIMIT, ModelFacts, PredictionRequest, PredictionStore, WhatIf, curve_days, read_given,
)

EXPORTABLE = ("mean", "std", "drift", "agreement", "tumor_probability")


class Viewer:
    """One model, one cohort, optional given predictions, and the cache where everything new goes."""

    def __init__(self, folders: ViewerFolders, cache_limit: int = CACHE_LIMIT):
        self.folders = folders
        self.cohort = load_cohort(folders.cohort)
        self.facts = ModelFacts(folders.run)
        given = read_given(folders.predictions)
        samples = given.summary["samples"] if given else self.facts.config.sampling.samples
        seed = given.summary.get("seed", 0) if given else 0
        self.store = PredictionStore(folders, given, samples, seed, limit=cache_limit)
        self.jobs = JobQueue(self.store)

    def info(self) -> dict[str, Any]:
        return {"model": str(self.folders.run), "cohort": str(self.folders.cohort),
                "predictions": str(self.folders.predictions) if self.folders.predictions else None,
                "cache": str(self.folders.cache), "dims": self.facts.layout.spatial_dims,
                "samples": self.store.samples, "class_kind": self.facts.class_kind,
                "class_options": self.facts.class_options(), "variables": self.facts.variables(self.cohort)}

    def patients(self) -> list[str]:
        """The given predictions' patients, then the run's test split (every patient when there is no split)."""
        given = [c["patient_id"] for c in self.store.given.summary["cases"]] if self.store.given else []
        run = RunFolder(self.folders.run)
        test = list(run.splits().test) if run.splits_json.is_file() else list(self.cohort.patients.index)
        return list(dict.fromkeys([*given, *test]))

    def rows(self) -> list[dict[str, Any]]:
        """The patient list: one row per predicted case, one "not predicted yet" row per other patient."""
        rows = []
        for patient in self.patients():
            found = self.store.find(self.store.given_request(patient))
            cases = [c for c in found.summary["cases"] if c["patient_id"] == patient] if found else []
            rows += [summary_row(c, self.cohort, found.id) for c in cases] or [
                {"patient_id": patient, "predicted": False, "key": None}]
        return rows

    def case(self, key: str) -> dict[str, Any]:
        """A factual case: its row, layers, true geometry, the patient's clinical values and the lesion's timeline
        (catalog.timeline: which scans the prediction was made from)."""
        found, entry = self._factual(key)
        patient = entry["patient_id"]
        values = self.cohort.patients.loc[patient]
        clinical = {v.name: _cell(values.get(v.name)) for v in self.facts.encoder.variables}
        return {"row": summary_row(entry, self.cohort, found.id), "set": found.id,
                "layers": case_layers(self.folders, self.cohort, found, entry),
                "geometry": geometry(self.cohort, entry), "clinical": clinical,
                "timeline": timeline(self.folders, self.cohort, entry),
                "overrides": list(self.store.given_request(patient).overrides), "volume_unit": entry.get("volume_unit")}

    def predict_patient(self, patient: str) -> Job:
        if patient not in self.cohort.patients.index:
            raise OncodiffError(f"patient {patient!r} is not in {self.cohort.root / 'patients.csv'}")
        request = self.store.given_request(patient)
        return self.jobs.submit([request], lambda: {"patient_id": patient, "rows": self.rows()})

    def whatif(self, question: WhatIf) -> Job:
        """Check the question (a ConfigError says what is wrong), then queue its predictions and its curve."""
        found, entry = self._factual(question.key)
        factual = self.store.given_request(entry["patient_id"])
        overrides = question.overrides(factual.overrides, self.facts.class_key)
        self.facts.check(question, overrides, self.cohort)
        asked = PredictionRequest(entry["patient_id"], float(question.days), overrides)
        grid = curve_days(asked.days)  # of the whole days asked
        requests = [asked, *(asked.with_days(d) for d in grid), *(factual.with_days(d) for d in grid)]
        return self.jobs.submit(requests, lambda: self._whatif_result(found, entry, asked, factual, grid))

    def export(self, set_id: str, key: str, layer: str) -> tuple[Path, str]:
        """The file of ``layer`` of a case in a prediction set (baseline geometry) and a download name."""
        found = self.store.set_by_id(set_id)
        entry = next((c for c in found.summary["cases"] if c["key"] == key), None) if found else None
        if entry is None or layer not in EXPORTABLE or layer not in entry.get("files", {}):
            raise KeyError(f"{set_id}/{key}/{layer}")
        overrides = "_".join(o.replace("clinical.", "").replace("=", "-") for o in found.summary.get("overrides", []))
        name = "_".join(p for p in (key.replace("/", "_"), overrides, layer) if p) + ".nii.gz"
        return found.case_folder(entry) / entry["files"][layer], name

    def _factual(self, key: str) -> tuple[PredictionSet, dict]:
        slot = case_slot(key) if key.count("/") >= 2 else None
        found = self.store.find(self.store.given_request(slot[0])) if slot else None
        entry = next((c for c in found.summary["cases"] if c["key"] == key), None) if found else None
        if entry is None:
            raise KeyError(key)
        return found, entry

    def _whatif_result(self, factual_set: PredictionSet, factual: dict, asked: PredictionRequest,
                       factual_request: PredictionRequest, grid: list[float]) -> dict[str, Any]:
        answer = self.store.find(asked)
        entry = answer.case(case_slot(factual["key"]))
        if entry is None:
            raise OncodiffError(f"the what-if prediction has no case for {factual['key']}")
        return {"set": answer.id, "row": summary_row(entry, self.cohort, answer.id), "overrides": list(asked.overrides),
                "layers": case_layers(self.folders, self.cohort, answer, entry),
                "timeline": timeline(self.folders, self.cohort, entry),
                "difference": self._difference(factual_set, factual, answer, entry),
                "curve": {"whatif": self._curve(asked, grid, factual), "factual": self._curve(factual_request, grid,
                                                                                          factual)}}

    def _difference(self, base_set: PredictionSet, base: dict, other_set: PredictionSet, other: dict) -> dict:
        """what-if mean - factual mean, in the baseline's geometry, written once into the cache."""
        target = self.folders.cache / "difference" / f"{base_set.id}-{other_set.id}-{other['key'].replace('/', '_')}.nii.gz"
        if not target.is_file():
            before = read_image(base_set.case_folder(base) / base["files"]["mean"])
            after = read_image(other_set.case_folder(other) / other["files"]["mean"])
            write_image(after.array - before.array, before, target)
        return {"url": self.folders.url(target)}

    def _curve(self, request: PredictionRequest, grid: list[float], factual: dict) -> list[dict[str, Any]]:
        points = []
        for days in grid:
            entry = self.store.find(request.with_days(days)).case(case_slot(factual["key"]))
            if entry is not None:
                points.append({"days": days, "change_pct": entry.get("change_pct_mean"),
                               "interval_90": entry.get("change_pct_interval_90"),
                               "response_probability": entry.get("response_probability")})
        return points


def _cell(value: Any) -> str:
    return "" if is_missing(value) else as_text(value)
