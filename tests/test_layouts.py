"""oncodiff/layouts.py: the predictions and evaluation folders' paths, and that no other module spells their
file names (the one owner of each name, as runs.py is the run folder's)."""

from __future__ import annotations

import ast
from pathlib import Path

from oncodiff import layouts
from oncodiff.layouts import EvaluationFolder, PredictionsFolder

SRC = Path(layouts.__file__).resolve().parent


def test_predictions_folder_paths(tmp_path):
    folder = PredictionsFolder(str(tmp_path))
    assert folder.summary_json == tmp_path / "summary.json"
    assert folder.follow_up("P01/L1/week12/z3") == tmp_path / "P01_L1_week12_z3"
    assert folder.follow_up_summary_json("P01/L1/week12") == tmp_path / "P01_L1_week12" / "summary.json"
    assert folder.layer("P01/L1/week12", "sample_00") == tmp_path / "P01_L1_week12" / "sample_00.nii.gz"
    assert folder.layer("P01/L1/week12", "mean", layouts.PNG) == tmp_path / "P01_L1_week12" / "mean.png"


def test_evaluation_folder_paths(tmp_path):
    folder = EvaluationFolder(tmp_path)
    assert [folder.summary_json, folder.tables_md, folder.figures_npz, folder.report_html] == [
        tmp_path / name for name in ("summary.json", "tables.md", "figures.npz", "report.html")]


def test_no_other_module_spells_the_folders_file_names():
    names = {layouts.SUMMARY_JSON, layouts.TABLES_MD, layouts.FIGURES_NPZ, layouts.REPORT_HTML}
    spelled = []
    for path in SRC.rglob("*.py"):
        if path.name == "layouts.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
                    and id(node) not in docstrings):
                spelled.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}")
    assert not spelled, "use oncodiff.layouts instead of spelling these names:\n" + "\n".join(spelled)
