"""Output markers count only in the folder they name, and a cohort another process reads is never replaced
(src/oncodiff/outputs.py, docs/outputs.md)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from factory import write_cohort
from oncodiff.cli import app
from oncodiff.outputs import (
    MARKER, OutputError, _start_time, check_output, cohort_in_use, in_use_folder, is_own_output, staged_folder,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def made_output(out: Path, kind: str = "predictions") -> Path:
    with staged_folder(out, kind) as partial:
        (partial / "summary.json").write_text("{}", encoding="utf-8")
    return out


def users_folder(root: Path) -> Path:
    folder = root / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("three years of work", encoding="utf-8")
    return folder


# ---- markers ------------------------------------------------------------------------------------------------

def test_a_marker_names_the_folder_it_was_staged_for(tmp_path):
    out = made_output(tmp_path / "pred")
    marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    assert marker["folder"] == str(out.resolve())
    assert (marker["device"], marker["inode"]) == (os.stat(out).st_dev, os.stat(out).st_ino)
    assert is_own_output(out, "predictions")
    assert check_output(out, "predictions", overwrite=True) == out.resolve()


def test_a_copied_marker_does_not_make_a_users_folder_replaceable(tmp_path):
    out = made_output(tmp_path / "pred")
    thesis = users_folder(tmp_path)
    shutil.copy(out / MARKER, thesis / MARKER)
    assert not is_own_output(thesis, "predictions")
    with pytest.raises(OutputError, match=f"written for {out.resolve()}, not for this folder"):
        check_output(thesis, "predictions", overwrite=True)
    with pytest.raises(OutputError, match="not for this folder"):
        check_output(thesis, "cohort", overwrite=True)


def test_a_copied_marker_is_refused_by_the_verbs_and_the_folder_kept(tmp_path):
    made = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "cohort"), "--patients", "1"])
    assert made.exit_code == 0, made.output
    thesis = users_folder(tmp_path)
    shutil.copy(tmp_path / "cohort" / MARKER, thesis / MARKER)
    result = CliRunner().invoke(app, ["synth", "--out", str(thesis), "--patients", "1", "--overwrite"])
    assert result.exit_code == 2 and "not for this folder (copied?)" in result.output, result.output
    assert (thesis / "chapter1.tex").read_text(encoding="utf-8") == "three years of work"


def test_an_older_marker_without_the_folder_does_not_count(tmp_path):
    thesis = users_folder(tmp_path)
    (thesis / MARKER).write_text(json.dumps({"kind": "evaluation", "state": "complete"}), encoding="utf-8")
    with pytest.raises(OutputError, match="written by an older oncodiff"):
        check_output(thesis, "evaluation", overwrite=True)


def test_a_moved_output_is_still_its_own(tmp_path):
    out = made_output(tmp_path / "pred")
    moved = tmp_path / "renamed"
    out.rename(moved)  # same file system: the inode goes with it
    assert is_own_output(moved, "predictions")
    check_output(moved, "predictions", overwrite=True)


def test_a_copied_run_folder_still_resumes(tmp_path):
    """A run copied to another place (another machine) is still a run by its config.json + splits.json."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "splits.json"):
        (run / name).write_text("{}", encoding="utf-8")
    from oncodiff.outputs import write_marker

    write_marker(run, "run")
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert is_own_output(copy, "run")


# ---- a cohort in use --------------------------------------------------------------------------------------

@pytest.fixture
def other_reader(tmp_path):
    """A cohort made by synth, and another process reading it as `oncodiff evaluate` does: (cohort, process)."""
    cohort = tmp_path / "cohort"
    made = CliRunner().invoke(app, ["synth", "--out", str(cohort), "--patients", "1"])
    assert made.exit_code == 0, made.output
    script = textwrap.dedent(f"""
        import sys, time
        from oncodiff.outputs import cohort_in_use
        with cohort_in_use({str(cohort)!r}, "evaluate"):
            print("reading", flush=True)
            time.sleep(120)
    """)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout.readline().strip() == "reading"
    yield cohort, process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_synth_overwrite_refuses_a_cohort_another_process_reads(other_reader, tmp_path):
    cohort, process = other_reader
    before = sorted(p.name for p in cohort.iterdir())
    result = CliRunner().invoke(app, ["synth", "--out", str(cohort), "--patients", "1", "--overwrite"])
    assert result.exit_code == 2, result.output
    assert f"is a cohort in use by `oncodiff evaluate` (pid {process.pid}" in result.output
    assert sorted(p.name for p in cohort.iterdir()) == before
    assert not list(cohort.glob("*in-use*")) and in_use_folder(cohort).parent == cohort.parent  # beside, not in it
    process.send_signal(signal.SIGKILL)  # a reader killed -9 leaves a stale record: taken over
    process.wait()
    again = CliRunner().invoke(app, ["synth", "--out", str(cohort), "--patients", "1", "--overwrite"])
    assert again.exit_code == 0, again.output
    assert not in_use_folder(cohort).exists()


def test_a_reader_refuses_a_cohort_being_replaced(tmp_path):
    cohort = write_cohort(tmp_path / "cohort", n_patients=2)
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        folder = in_use_folder(cohort)
        folder.mkdir()
        host = os.uname().nodename
        record = {"pid": writer.pid, "host": host, "start": _start_time(writer.pid), "command": "synth"}
        (folder / f"write-{host}-{writer.pid}.json").write_text(json.dumps(record), encoding="utf-8")
        with pytest.raises(OutputError, match=f"is being replaced by `oncodiff synth` \\(pid {writer.pid}"):
            with cohort_in_use(cohort, "train"):
                pass
        assert [p.name for p in folder.iterdir()] == [f"write-{host}-{writer.pid}.json"]  # its own record went
    finally:
        writer.kill()
        writer.wait()
    with cohort_in_use(cohort, "train"):  # the writer is gone: its record is stale
        pass


def test_readers_hold_one_record_beside_the_cohort_while_reading(tmp_path, monkeypatch):
    cohort = write_cohort(tmp_path / "cohort", n_patients=2)
    inside = sorted(p.name for p in cohort.rglob("*"))
    with cohort_in_use(cohort, "train"):
        with cohort_in_use(cohort, "preprocess"):  # nested in one process: one record
            records = sorted(p.name for p in in_use_folder(cohort).iterdir())
            assert records == [f"read-{os.uname().nodename}-{os.getpid()}.json"]
        assert in_use_folder(cohort).exists()
    assert not in_use_folder(cohort).exists()
    assert sorted(p.name for p in cohort.rglob("*")) == inside

    import oncodiff.data.preprocess as preprocess
    from oncodiff.config import load_config

    seen = []

    def stop(*args):
        seen.append(sorted(p.name for p in in_use_folder(cohort).iterdir()))
        raise RuntimeError("stop here")

    monkeypatch.setattr(preprocess, "_preprocess", stop)
    with pytest.raises(RuntimeError, match="stop here"):
        preprocess.preprocess_cohort(cohort, load_config("demo").data, cache_dir=tmp_path / "cache")
    assert seen and seen[0][0].startswith("read-") and not in_use_folder(cohort).exists()


def test_every_reading_verb_holds_the_cohort():
    from oncodiff.data.preprocess import preprocess_cohort
    from oncodiff.evaluation.protocol import evaluate
    from oncodiff.pipeline.predict import calibrate_run, predict
    from oncodiff.training.train import train

    for function in (train, predict, evaluate, preprocess_cohort, calibrate_run):
        assert function.__code__.co_name == "reading", function.__name__  # the reads_cohort wrapper
