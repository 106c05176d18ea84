"""The evaluation run notebook (`nbs/run_eval.ipynb`) end to end through papermill on Fashion-MNIST with a tiny
budget (`-p epochs 2`): the stand-in set it evaluates without `distilled_dir`, the random-real baseline beside it,
the printed table and the records it promises; bad parameters stop before any training with a message that
names them."""
import json

import pytest

from ddrepro.core import RunRecord
from ddrepro.data import class_map, load_distilled
from ddrepro.evaluate import BEST_LABEL

CM = class_map("fashion_mnist")


def _printed(nb_path) -> str:
    "Everything the executed notebook's cells printed."
    nb = json.loads(nb_path.read_text())
    return "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))


def _code_status(nb_path) -> list:
    nb = json.loads(nb_path.read_text())
    return [c["metadata"]["papermill"]["status"] for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.slow
def test_run_eval_standin_smoke(tmp_path, papermill):
    out = tmp_path / "eval"
    r = papermill("run_eval.ipynb", tmp_path / "out.ipynb", "-p", "ipc", "1", "-p", "epochs", "2", "-p", "repeats", "1",
                  "-p", "threads", "1", "-p", "out_dir", str(out))
    assert r.returncode == 0, r.stderr[-4000:]
    rec = RunRecord.load(out)
    assert rec.status == "complete" and rec.kind == "eval" and rec.params["epochs"] == 2 and rec.params["ipc"] == 1
    assert set(rec.stages) >= {"load", "distilled", "random_real"} and "full_data" not in rec.stages
    # the stand-in: one real image per class, written where the record says, read back as a distilled set
    assert rec.results["distilled"]["n_runs"] == 1 and rec.stages["load"]["distilled_dir"] == str(out / "standin_set")
    assert load_distilled(out / "standin_set", CM, 1, exact=True).per_class() == [1] * 10
    assert rec.stages["load"]["n_test"] == 10000 and rec.stages["load"]["n_baseline"] == 10
    table = rec.results["table"]
    for key, label in (("distilled", "standin_set (distilled)"), ("random_real", "random real (same IPC)")):
        s = rec.results[key]
        sub = RunRecord.load(out / key)                     # one record per evaluation, the same numbers
        assert sub.status == "complete" and sub.results["final_mean"] == s["final_mean"] and rec.results["records"][label] == str(sub.path)
        assert sub.params["config"]["epochs"] == 2 and [run["epochs"] for run in sub.results["runs"]] == [2]
        assert s["n_train"] == 10 and s["ipc"] == 1 and s["protocol"] == "hard" and s["preset"] == "embedded" and s["student"] == "convnet"
        # top-1 on the 10 000 test images is a count of correct images over 10 000
        assert abs(s["final_mean"] * 10000 - round(s["final_mean"] * 10000)) < 1e-2, s["final_mean"]
        assert s["best_mean"] >= s["final_mean"]
        # the printed table has this row with this number
        row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
        assert f"| {100 * s['final_mean']:.1f} ± 0.0 |" in row, row
    assert "final top-1 % (headline)" in table and BEST_LABEL in table
    printed = _printed(tmp_path / "out.ipynb")
    assert table in printed and f"record: {rec.path}" in printed and "evaluating a stand-in set" in printed


@pytest.mark.parametrize("param,value,message,failing_cell", [
    ("protocol", "medium", "ConfigError: protocol='medium': expected 'hard' or 'soft'", 2),
    ("ipc", "0", "ConfigError: ipc=0: expected a positive number of images per class", 2),
    ("distilled_dir", "{tmp}/nowhere", "DataError: {tmp}/nowhere: distilled-set folder not found", 3),
], ids=["protocol", "ipc", "distilled_dir"])
def test_run_eval_bad_parameters_fail_before_training(tmp_path, papermill, param, value, message, failing_cell):
    value, message = value.format(tmp=tmp_path), message.format(tmp=tmp_path)
    out = tmp_path / "eval"
    r = papermill("run_eval.ipynb", tmp_path / "out.ipynb", "-p", param, value, "-p", "out_dir", str(out))
    assert r.returncode != 0
    assert message in r.stderr + r.stdout, (r.stderr + r.stdout)[-3000:]
    status = _code_status(tmp_path / "out.ipynb")
    # code cells 0, 1: parameters and injected parameters; 2: config; 3: data. No student is trained.
    assert status[failing_cell] == "failed" and set(status[failing_cell + 1:]) == {"pending"}, status
    if failing_cell == 3:
        assert RunRecord.load(out).stages["load"]["status"] == f"failed: {message}"
    else:
        assert not out.exists()
