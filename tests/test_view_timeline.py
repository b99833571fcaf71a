"""A patient's timeline, on a tiny synthetic cohort with an interim scan (``oncodiff synth --interim 28``): ``predict
--days D`` predicts day D from every scan before it and names them in summary.json; the viewer's case answer lists
the lesion's scans in time order with the role each played (baseline, input, not used, truth, later) and the
predicted day, each scan with an image layer served under the same boundary (token, Host) as everything else."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from oncodiff.cli import app as cli
from oncodiff.cohort import load_cohort
from oncodiff.view import ViewerFolders, create_app
from oncodiff.view.catalog import timeline
from test_pipeline_predict import TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TOKEN = "test-token-0123456789"
PORT = 8765
ORIGIN = f"http://127.0.0.1:{PORT}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """6 synthetic 2D brain patients with scans on days 0 (pre), 28, 60 and 120, a tiny run (data.max_priors=2, the
    default) and its predictions of P0001's three follow-ups."""
    from oncodiff.config import load_config
    from oncodiff.pipeline import predict
    from oncodiff.synth import synthesize
    from oncodiff.training import train

    root = tmp_path_factory.mktemp("timeline")
    cohort = synthesize("brain", 6, 2, 0, root / "cohort", interim=(28,))
    run = train(cohort, load_config("demo", [*TINY, "data.crop_size=[16,16]"]), root / "run", cache_dir=root / "cache")
    predictions = predict(run, cohort, root / "predictions", patients=["P0001"], cache_dir=root / "cache")
    return {"root": root, "cohort": cohort, "run": run, "predictions": predictions, "cache": root / "cache"}


@pytest.fixture(scope="module")
def client(trained):
    folders = ViewerFolders.choose(trained["run"], predictions=trained["predictions"], data_cache=trained["cache"])
    with TestClient(create_app(folders, token=TOKEN, port=PORT), base_url=ORIGIN) as client:
        assert client.get(f"/?token={TOKEN}").status_code == 200
        yield client


def roles(items: list[dict]) -> list[tuple[str, float, str]]:
    return [(item["timepoint"], item["days"], item["role"]) for item in items]


def test_predict_a_later_day_from_every_earlier_scan(trained):
    out = trained["root"] / "day90"
    result = CliRunner().invoke(cli, ["predict", "--model", str(trained["run"]), "--cohort", str(trained["cohort"]),
                                      "--patient", "P0001", "--days", "90", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (case,) = json.loads((out / "summary.json").read_text())["cases"]
    assert case["timepoint"] == "day90" and case["days"] == 90
    assert case["priors"] == [{"timepoint": "day28", "days": 28.0}, {"timepoint": "month2", "days": 60.0}]
    early = CliRunner().invoke(cli, ["predict", "--model", str(trained["run"]), "--cohort", str(trained["cohort"]),
                                     "--patient", "P0001", "--days", "14", "--out", str(trained["root"] / "day14")])
    assert early.exit_code == 0, early.output
    (case,) = json.loads((trained["root"] / "day14" / "summary.json").read_text())["cases"]
    assert case["priors"] == []  # no scan between the baseline and day 14: the baseline alone


def test_a_day_not_after_the_baseline_is_a_clear_error(trained, tmp_path):
    result = CliRunner().invoke(cli, ["predict", "--model", str(trained["run"]), "--cohort", str(trained["cohort"]),
                                      "--patient", "P0001", "--days", "0", "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "--days 0: the day to predict must be after the baseline" in result.output
    assert not (tmp_path / "out" / "summary.json").exists()


def test_the_case_shows_the_timeline_and_which_scans_were_used(client):
    answer = client.get("/api/case", params={"key": "P0001/L1/month4"}).json()
    assert roles(answer["timeline"]) == [("pre", 0, "baseline"), ("day28", 28, "input"), ("month2", 60, "input"),
                                         ("month4", 120, "truth"), ("month4", 120, "predicted")]
    earlier = client.get("/api/case", params={"key": "P0001/L1/day28"}).json()
    assert roles(earlier["timeline"]) == [("pre", 0, "baseline"), ("day28", 28, "truth"), ("day28", 28, "predicted"),
                                          ("month2", 60, "later"), ("month4", 120, "later")]
    for item in answer["timeline"][:-1]:  # every scan is an image the page can load, under the same boundary
        url = item["layer"]["url"]
        assert client.get(url).status_code == 200
        assert TestClient(client.app, base_url=ORIGIN).get(url).status_code == 401  # no token
        assert client.get(url, headers={"Host": "evil.example:8765"}).status_code == 403


def test_the_case_answer_needs_the_token(client):
    stranger = TestClient(client.app, base_url=ORIGIN)
    assert stranger.get("/api/case", params={"key": "P0001/L1/month4"}).status_code == 401


def test_unused_and_unrecorded_inputs_are_told_apart(trained, client):
    folders = client.app.state.viewer.folders
    cohort = load_cohort(trained["cohort"])
    one_prior = {"patient_id": "P0001", "lesion_id": "L1", "timepoint": "day100", "days": 100.0,
                 "priors": [{"timepoint": "month2", "days": 60.0}]}  # a model with data.max_priors=1
    assert roles(timeline(folders, cohort, one_prior)) == [
        ("pre", 0, "baseline"), ("day28", 28, "not used"), ("month2", 60, "input"), ("day100", 100, "predicted"),
        ("month4", 120, "later")]
    old = {k: v for k, v in one_prior.items() if k != "priors"}  # predicted before summary.json named its inputs
    assert [r for _, _, r in roles(timeline(folders, cohort, old))][:3] == ["baseline", "unknown", "unknown"]
