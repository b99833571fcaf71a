"""``oncodiff view`` over HTTP (Starlette's TestClient) on a tiny trained 2D run: every endpoint, what-if
questions answered, cached and refused, two questions queued rather than interleaved, exports in the baseline's
geometry, corrupt files reported, and nothing served outside the given folders or written into the cohort.
The boundary: a foreign Host, a missing token, a foreign Origin, a non-JSON body and a flood of questions are
refused; the cache keeps whole days and its most recently used predictions."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from starlette.testclient import TestClient

from oncodiff.errors import OncodiffError
from oncodiff.view import ViewerFolders, create_app
from oncodiff.view.app import serve
from oncodiff.view.jobs import MAX_PENDING
from oncodiff.view.whatif import PredictionRequest, PredictionStore
from test_pipeline_predict import CROPS, SHAPES, SPACINGS, TINY, cohort_with_a_new_patient

pytestmark = pytest.mark.usefixtures("one_torch_thread")
GIVEN = ["P001", "P002"]  # predicted up front (the --predictions folder); the others only on request
TOKEN = "test-token-0123456789"
PORT = 8765
ORIGIN = f"http://127.0.0.1:{PORT}"


def train_and_predict(root: Path, dims: int) -> dict:
    """A tiny run trained on a 7-patient cohort (P007 has no follow-up) and its predictions for GIVEN."""
    from oncodiff.config import load_config
    from oncodiff.pipeline import predict
    from oncodiff.training import train

    cohort = cohort_with_a_new_patient(root / "cohort", dims)
    config = load_config("demo", [*TINY, f"data.dims={dims}", f"data.crop_size={CROPS[dims]}",
                                  f"model.generate_mask={dims == 2}"])
    run = train(cohort, config, root / "run", cache_dir=root / "cache")
    predictions = predict(run, cohort, root / "predictions", patients=GIVEN, cache_dir=root / "cache")
    return {"root": root, "cohort": cohort, "run": run, "predictions": predictions, "data_cache": root / "cache"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cohort_fingerprint(cohort: Path) -> dict[str, str]:
    return {str(p.relative_to(cohort)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(cohort.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = train_and_predict(tmp_path_factory.mktemp("view2d"), dims=2)
    run["fingerprint"] = cohort_fingerprint(run["cohort"])
    return run


def signed_in(app) -> TestClient:
    """A client at the viewer's own address that opened the tokened URL once (so it holds the cookie)."""
    client = TestClient(app, base_url=ORIGIN)
    assert client.get(f"/?token={TOKEN}").status_code == 200
    return client


@pytest.fixture(scope="module")
def folders(trained):
    return ViewerFolders.choose(trained["run"], predictions=trained["predictions"], data_cache=trained["data_cache"])


@pytest.fixture(scope="module")
def client(folders):
    with signed_in(create_app(folders, token=TOKEN, port=PORT)) as client:
        yield client


def wait(client: TestClient, job: dict, timeout: float = 300) -> dict:
    """Poll a job until it leaves the queue (the timeout only guards against a hang)."""
    deadline = time.monotonic() + timeout
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.get(f"/api/jobs/{job['id']}").json()
    return job


def nifti(content: bytes) -> nib.Nifti1Image:
    """A served .nii.gz (sent as the file's bytes, still compressed)."""
    return nib.Nifti1Image.from_bytes(gzip.decompress(content))


def first_key(client: TestClient) -> str:
    return next(r["key"] for r in client.get("/api/cases").json() if r["predicted"])


def test_the_page_and_niivue_are_served_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and 'src="/static/niivue.umd.js"' in page.text
    for name in ("app.js", "app.css", "niivue.umd.js"):
        assert client.get(f"/static/{name}").status_code == 200, name
    assert "Niivue" in client.get("/static/niivue.umd.js").text


def test_info_names_the_model_its_classes_and_clinical_variables(client, trained):
    info = client.get("/api/info").json()
    assert info["dims"] == 2 and info["cohort"] == str(trained["cohort"].resolve())
    assert info["class_options"] == ["", "responder", "non-responder"]
    age = next(v for v in info["variables"] if v["name"] == "age")
    assert age["type"] == "numeric" and age["range"][0] >= 0  # ages are never negative in the cohort
    assert next(v for v in info["variables"] if v["name"] == "sex")["categories"] == ["F", "M"]


def test_the_patient_list_has_the_given_predictions_with_truth_and_the_rest_unpredicted(client, trained):
    rows = client.get("/api/cases").json()
    predicted = [r for r in rows if r["predicted"]]
    assert [r["patient_id"] for r in predicted] == GIVEN
    summary = json.loads((trained["predictions"] / "summary.json").read_text(encoding="utf-8"))
    for row, case in zip(predicted, summary["cases"]):
        assert row["change_pct"] == case["change_pct_mean"]
        assert row["response_probability"] == case["response_probability"]
        assert row["change_pct_true"] == pytest.approx(case["change_pct_true"])
    assert predicted[0]["response_true"] == "responder" and predicted[1]["response_true"] == "non-responder"
    assert all(r["key"] is None for r in rows if not r["predicted"])


def test_a_case_has_every_layer_and_the_true_geometry(client, trained):
    case = client.get("/api/case", params={"key": first_key(client)}).json()
    layers = case["layers"]
    for name in ("mean", "std", "drift", "agreement", "tumor_probability", "baseline", "followup",
                 "baseline_contour", "followup_contour", "predicted_contour"):
        assert "url" in layers[name], name
    assert len(layers["samples"]) == 2
    assert case["geometry"] == {"dims": 2, "shape": list(SHAPES[2]), "spacing_mm": list(SPACINGS[2]),
                                "orientation": "RA"}
    assert case["clinical"]["sex"] in ("F", "M")
    contour = client.get(layers["baseline_contour"]["url"])
    assert contour.status_code == 200
    mask = np.asanyarray(nifti(contour.content).dataobj)
    assert 0 < mask.sum() < (mask.size / 10)  # an edge, not the filled disc


def test_an_unknown_case_job_or_export_is_not_found(client):
    assert client.get("/api/case", params={"key": "P999/L1/week6"}).status_code == 404
    assert client.get("/api/jobs/12345").status_code == 404
    key = first_key(client)
    assert client.get("/api/export", params={"set": "given", "key": key, "layer": "sample_00/../x"}).status_code == 404
    assert client.get("/api/export", params={"set": "../../run", "key": key}).status_code == 404


@pytest.mark.parametrize("path", ["/files/cohort/%2e%2e/run/config.json", "/files/cohort/..%2F..%2Fetc%2Fpasswd",
                                  "/files/cohort/%2Fetc%2Fpasswd", "/files/home/x", "/files/run/",
                                  "/files/predictions/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/hostname"])
def test_nothing_outside_the_given_folders_is_served(client, path):
    assert client.get(path).status_code == 404


def test_files_under_the_given_folders_are_served(client, trained):
    assert client.get("/files/cohort/patients.csv").text == (trained["cohort"] / "patients.csv").read_text()
    assert client.get("/files/run/splits.json").status_code == 200


def test_export_is_the_prediction_in_the_baseline_geometry(client, trained):
    key = first_key(client)
    response = client.get("/api/export", params={"set": "given", "key": key, "layer": "mean"})
    assert response.status_code == 200
    assert key.replace("/", "_") in response.headers["content-disposition"]
    image = nifti(response.content)
    baseline = nib.load(str(trained["cohort"] / key.split("/")[0] / "pre.nii.gz"))
    assert image.shape == baseline.shape
    np.testing.assert_allclose(image.affine, baseline.affine, atol=1e-5)


def test_a_what_if_is_predicted_then_answered_from_the_cache(client, trained):
    key = first_key(client)
    question = {"key": key, "days": 84, "response": "non-responder", "clinical": {"age": "45", "sex": "M"}}
    job = client.post("/api/whatif", json=question)
    assert job.status_code == 202 and job.json()["total"] == 6  # the asked day (on the curve) + 2 more curve days + 3 factual ones
    done = wait(client, job.json())
    assert done["status"] == "done", done["message"]
    result = done["result"]
    assert result["row"]["days"] == 84 and result["row"]["change_pct"] is not None
    assert result["overrides"] == ["clinical.age=45", "clinical.sex=M", "response=non-responder"]
    assert [p["days"] for p in result["curve"]["whatif"]] == [42.0, 84.0, 126.0]
    assert [p["days"] for p in result["curve"]["factual"]] == [42.0, 84.0, 126.0]
    difference = nifti(client.get(result["difference"]["url"]).content)
    factual = nib.load(str(trained["predictions"] / key.replace("/", "_") / "mean.nii.gz"))
    whatif = nifti(client.get(result["layers"]["mean"]["url"]).content)
    np.testing.assert_allclose(difference.get_fdata(), whatif.get_fdata() - factual.get_fdata(), atol=1e-4)
    again = client.post("/api/whatif", json=question).json()
    assert again["status"] == "done" and again["total"] == 0 and again["result"]["set"] == result["set"]
    nearly = client.post("/api/whatif", json={**question, "days": 83.6}).json()  # whole days: the same question
    assert nearly["total"] == 0 and nearly["result"]["set"] == result["set"]
    exported = client.get("/api/export", params={"set": result["set"], "key": result["row"]["key"], "layer": "mean"})
    assert exported.status_code == 200 and "age-45" in exported.headers["content-disposition"]


@pytest.mark.parametrize("question, message", [
    ({"clinical": {"age": "-5"}}, "clinical.age=-5: outside what the model can answer for"),
    ({"clinical": {"sex": "X"}}, "'X' is not a category of sex; choose one of F, M"),
    ({"clinical": {"age": "old"}}, "age is numeric; give a number"),
    ({"clinical": {"weight": "70"}}, "no such clinical variable"),
    ({"response": "maybe"}, "--set response=maybe: use 'responder'"),
    ({"days": -3}, "days since baseline = -3"),
    ({"days": 0.4}, "days since baseline = 0: give a number of days between 1 and 3650"),
    ({"days": "soon"}, "days since baseline = 'soon'"),
])
def test_an_invalid_what_if_gets_a_message_and_queues_nothing(client, question, message):
    body = {"key": first_key(client), "days": 42, **question}
    response = client.post("/api/whatif", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_a_what_if_about_an_unknown_case_is_not_found(client):
    assert client.post("/api/whatif", json={"key": "P999/L1/week6", "days": 42}).status_code == 404


def test_two_what_ifs_at_once_are_queued_not_interleaved(client, monkeypatch):
    store = client.app.state.viewer.store
    running, overlaps, original = [], [], store.predict

    def recording(request):
        overlaps.append(len(running))
        running.append(request)
        try:
            return original(request)
        finally:
            running.remove(request)

    monkeypatch.setattr(store, "predict", recording)
    key = first_key(client)
    jobs = [client.post("/api/whatif", json={"key": key, "days": days, "clinical": {"age": "70"}}).json()
            for days in (30, 31)]
    assert jobs[1]["status"] == "queued"
    done = [wait(client, job) for job in jobs]
    assert [d["status"] for d in done] == ["done", "done"]
    assert len(overlaps) >= 6 and max(overlaps) == 0  # every prediction ran alone


def test_predicting_a_patient_on_request(client):
    unpredicted = next(r["patient_id"] for r in client.get("/api/cases").json() if not r["predicted"])
    done = wait(client, client.post("/api/predict", json={"patient": unpredicted}).json())
    assert done["status"] == "done", done["message"]
    assert any(r["patient_id"] == unpredicted and r["predicted"] for r in done["result"]["rows"])
    assert client.post("/api/predict", json={"patient": "P999"}).status_code == 400
    no_followup = wait(client, client.post("/api/predict", json={"patient": "P007"}).json())
    assert no_followup["status"] == "error" and "has no follow-up scan" in no_followup["message"]


def test_a_corrupt_prediction_file_is_reported_in_the_case(trained, tmp_path):
    copy = tmp_path / "predictions"
    import shutil

    shutil.copytree(trained["predictions"], copy)
    key = json.loads((copy / "summary.json").read_text(encoding="utf-8"))["cases"][0]["key"]
    (copy / key.replace("/", "_") / "drift.nii.gz").write_bytes(b"not a nifti file")
    folders = ViewerFolders.choose(trained["run"], predictions=copy, data_cache=trained["data_cache"])
    with signed_in(create_app(folders, token=TOKEN, port=PORT)) as client:
        layers = client.get("/api/case", params={"key": key}).json()["layers"]
    assert "drift.nii.gz: cannot be read" in layers["drift"]["error"]
    assert "url" in layers["mean"]


def test_the_cohort_is_never_written(client, trained):
    first_key(client)
    assert cohort_fingerprint(trained["cohort"]) == trained["fingerprint"]
    with pytest.raises(OncodiffError, match="inside the cohort folder"):
        ViewerFolders.choose(trained["run"], trained["cohort"], cache=trained["cohort"] / "view")


def test_folder_errors_name_the_option(trained, tmp_path):
    with pytest.raises(OncodiffError, match="--model"):
        ViewerFolders.choose(tmp_path / "missing", trained["cohort"])
    with pytest.raises(OncodiffError, match="--cohort is needed"):
        ViewerFolders.choose(trained["run"])
    with pytest.raises(OncodiffError, match="no cohort.yaml"):
        ViewerFolders.choose(trained["run"], tmp_path)


def test_serving_beyond_loopback_needs_allow_remote_and_warns(folders, monkeypatch, capsys):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    port = free_port()
    serve(folders, host="127.0.0.1", port=port)
    out = capsys.readouterr()
    assert "warning" not in out.err
    first = out.out.split("?token=")[1].split()[0]
    assert f"open http://127.0.0.1:{port}/?token=" in out.out and len(first) >= 40
    with pytest.raises(OncodiffError, match="--host 0.0.0.0 would let other machines .* pass --allow-remote"):
        serve(folders, host="0.0.0.0", port=port)
    serve(folders, host="0.0.0.0", port=port, allow_remote=True)
    out = capsys.readouterr()
    assert "warning: --host 0.0.0.0 --allow-remote" in out.err and f"http://127.0.0.1:{port}/?token=" in out.out
    assert out.out.split("?token=")[1].split()[0] != first  # a new token at each start
    assert [c["host"] for c in calls] == ["127.0.0.1", "0.0.0.0"]


def test_no_token_warns_and_lets_a_local_client_in(folders, monkeypatch, capsys):
    import uvicorn

    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: apps.append(app))
    port = free_port()
    serve(folders, port=port, token=False)
    out = capsys.readouterr()
    assert "warning: --no-token" in out.err and "token=" not in out.out
    with TestClient(apps[0], base_url=f"http://127.0.0.1:{port}") as client:
        assert client.get("/api/info").status_code == 200
        assert client.get("/api/info", headers={"Host": "evil.example"}).status_code == 403  # the Host still counts


def test_the_view_verb_reports_bad_folders(tmp_path):
    from typer.testing import CliRunner

    from oncodiff.cli import app

    result = CliRunner().invoke(app, ["view", "--model", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "error: --model" in result.output


def test_the_view_verb_refuses_a_remote_host_without_allow_remote(trained):
    from typer.testing import CliRunner

    from oncodiff.cli import app

    result = CliRunner().invoke(app, ["view", "--model", str(trained["run"]), "--predictions",
                                      str(trained["predictions"]), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "error: --host 0.0.0.0 would let other machines" in result.output
    assert "--allow-remote" in result.output and "Traceback" not in result.output


def test_a_port_in_use_is_a_clear_error(trained):
    import socket

    folders = ViewerFolders.choose(trained["run"], predictions=trained["predictions"], data_cache=trained["data_cache"])
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OncodiffError, match=f"--port {port}: cannot listen there"):
            serve(folders, host="127.0.0.1", port=port)


# ---- the boundary -----------------------------------------------------------------------------------------

SECRETS = ["/", "/api/info", "/api/cases", "/files/run/splits.json", "/files/cohort/patients.csv", "/static/app.js"]


@pytest.mark.parametrize("host", ["evil.example:8765", "evil.example", "127.0.0.1:9999", "localhost", ""])
def test_a_foreign_host_is_refused_before_routing(client, host):
    """DNS rebinding: a page on another domain that rebinds its name to 127.0.0.1 sends its own Host."""
    for path in SECRETS:
        response = client.get(path, headers={"Host": host})
        assert response.status_code == 403, path
        assert "this viewer answers only to" in response.text and "patients.csv" not in response.text
    refused = client.post("/api/predict", json={"patient": "P003"}, headers={"Host": host})
    assert refused.status_code == 403 and "answers only to 127.0.0.1:8765" in refused.json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765", "[::1]:8765"])
def test_the_loopback_names_are_accepted(client, host):
    assert client.get("/api/info", headers={"Host": host}).status_code == 200


def test_without_the_token_nothing_is_served(folders):
    with TestClient(create_app(folders, token=TOKEN, port=PORT), base_url=ORIGIN) as stranger:
        for path in SECRETS:
            response = stranger.get(path)
            assert response.status_code == 401, path
            assert "needs its access token" in response.text
        assert stranger.get("/api/info", cookies={"oncodiff-view-token-8765": "guess"}).status_code == 401
        assert stranger.get("/api/info?token=guess").status_code == 401
        assert stranger.get("/api/info", headers={"Authorization": "token guess"}).status_code == 401
        assert stranger.post("/api/predict", json={"patient": "P003"}).status_code == 401
        assert stranger.get("/api/info", headers={"Authorization": f"token {TOKEN}"}).status_code == 200
        assert stranger.get("/api/info", cookies={"oncodiff-view-token-9999": TOKEN}).status_code == 401  # another port's


def test_the_tokened_address_sets_a_strict_cookie_and_drops_the_token(folders):
    with TestClient(create_app(folders, token=TOKEN, port=PORT), base_url=ORIGIN) as browser:
        first = browser.get(f"/?token={TOKEN}", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/"
        cookie = first.headers["set-cookie"]
        assert cookie.startswith(f"oncodiff-view-token-{PORT}={TOKEN};") and "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert browser.get("/api/cases").status_code == 200  # the cookie alone lets the page in


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:9999", "https://127.0.0.1:8765",
                                    "http://localhost:8765"])
def test_a_change_from_a_foreign_origin_is_refused(client, origin):
    jobs = len(client.app.state.viewer.jobs.jobs)
    for path, body in (("/api/predict", {"patient": "P003"}), ("/api/whatif", {"key": first_key(client), "days": 50})):
        response = client.post(path, json=body, headers={"Origin": origin})
        assert response.status_code == 403, path
        assert f"from another site (Origin {origin!r})" in response.json()["error"]
    assert len(client.app.state.viewer.jobs.jobs) == jobs  # nothing queued


def test_a_change_from_the_viewers_own_page_or_without_origin_passes(client):
    for headers in ({"Origin": ORIGIN}, {}):
        response = client.post("/api/whatif", json={"key": "P999/L1/week6", "days": 42}, headers=headers)
        assert response.status_code == 404  # routed: past the guard


@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                  None])
def test_a_body_that_is_not_json_is_refused(client, kind):
    """An HTML form on any site can POST text/plain or form encodings without a CORS preflight."""
    jobs = len(client.app.state.viewer.jobs.jobs)
    headers = {"Content-Type": kind} if kind else {}
    for path, body in (("/api/predict", {"patient": "P003"}), ("/api/whatif", {"key": first_key(client), "days": 50})):
        response = client.post(path, content=json.dumps(body), headers=headers)
        assert response.status_code == 415, (path, response.text)
        assert "must have Content-Type: application/json" in response.json()["error"]
    assert len(client.app.state.viewer.jobs.jobs) == jobs


def test_a_flood_of_questions_is_refused_once_the_queue_is_full(client, monkeypatch):
    viewer = client.app.state.viewer
    release = threading.Event()

    def held(request):
        release.wait(timeout=120)
        raise OncodiffError("stopped by the test")

    monkeypatch.setattr(viewer.store, "predict", held)
    key = first_key(client)
    answers = [client.post("/api/whatif", json={"key": key, "days": 101.5 + k, "clinical": {"age": "61"}})
               for k in range(MAX_PENDING + 4)]
    try:
        assert [a.status_code for a in answers] == [202] * MAX_PENDING + [429] * 4
        assert "the viewer is busy: 8 prediction jobs are waiting or running" in answers[-1].json()["error"]
        assert client.post("/api/predict", json={"patient": "P004"}).status_code == 429
    finally:
        release.set()
    done = [wait(client, a.json()) for a in answers[:MAX_PENDING]]
    assert {d["status"] for d in done} == {"error"} and viewer.jobs.pending == 0
    again = client.post("/api/whatif", json={"key": key, "days": 300, "clinical": {"age": "61"}})
    assert again.status_code == 202  # room again once the queue drained
    wait(client, again.json())


def test_days_are_whole_in_the_cache_key_and_the_curve():
    assert PredictionRequest("P1", 101.4).key == PredictionRequest("P1", 100.6).key == PredictionRequest("P1", 101).key
    assert PredictionRequest("P1", 101.5).days == 102.0 and PredictionRequest("P1", 101.49).days == 101.0
    assert PredictionRequest("P1", 101.4).key != PredictionRequest("P1", 102).key
    assert PredictionRequest("P1", None).days is None
    from oncodiff.view.whatif import curve_days

    assert curve_days(85.0) == [43.0, 85.0, 128.0] and curve_days(1.0) == [1.0, 2.0]


def test_the_cache_keeps_its_most_recently_used_predictions(tmp_path):
    cache = tmp_path / "cache"
    folders = ViewerFolders(run=tmp_path, cohort=tmp_path, predictions=None, cache=cache)
    store = PredictionStore(folders, None, samples=1, seed=0, limit=3)
    requests = [PredictionRequest(f"P{k}", 10.0) for k in range(5)]
    for age, request in enumerate(requests):  # P0 the oldest
        folder = cache / "predictions" / request.key
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text('{"cases": []}', encoding="utf-8")
        stamp = 1_000_000 + age
        os.utime(folder, (stamp, stamp))
    (cache / "contour").mkdir()
    for k in range(14):
        (cache / "contour" / f"c{k:02d}.nii.gz").write_bytes(b"x")
        os.utime(cache / "contour" / f"c{k:02d}.nii.gz", (1_000_000 + k, 1_000_000 + k))
    assert store.find(requests[0]) is not None  # used now: the most recent
    removed = store.evict()
    assert sorted(p.name for p in removed if p.parent.name == "predictions") == sorted(
        r.key for r in requests[1:3])
    assert all(store.find(r) is not None for r in (requests[0], requests[3], requests[4]))
    assert sorted(p.name for p in (cache / "contour").iterdir()) == [f"c{k:02d}.nii.gz" for k in range(2, 14)]


def test_the_viewer_holds_its_cohort_in_use_and_lets_go_on_sigterm(trained):
    """While it runs, `synth --overwrite` cannot replace its cohort; stopped (SIGTERM as Ctrl+C), no record is left."""
    import re
    import subprocess
    import sys

    from oncodiff.outputs import in_use_folder

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    viewer = subprocess.Popen([sys.executable, "-m", "oncodiff.cli", "view", "--model", str(trained["run"]),
                               "--predictions", str(trained["predictions"]), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        printed = viewer.stdout.readline()
        assert re.search(rf"open http://127\.0\.0\.1:{port}/\?token=[\w-]{{40,}} ", printed), printed
        records = [p.name for p in in_use_folder(trained["cohort"]).iterdir()]
        assert records == [f"read-{os.uname().nodename}-{viewer.pid}.json"]
    finally:
        viewer.terminate()
        viewer.wait(timeout=60)
    assert not in_use_folder(trained["cohort"]).exists()
