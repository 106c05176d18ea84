"The evaluation-sensitivity study script end to end in its smoke mode (tiny panel, one preset, 2 epochs)."
import importlib.util
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _study():
    spec = importlib.util.spec_from_file_location("eval_sensitivity", ROOT / "benchmarks" / "eval_sensitivity.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_summary_gap_in_run_sd_units_by_hand():
    long = pd.DataFrame([dict(ipc=10, protocol="hard", preset="p", set=s, seed=k, final=v, seconds=1.0)
                         for s, vals in {"random real s0": (0.70, 0.72), "random real s1": (0.69, 0.71),
                                         "DiT pool": (0.60, 0.62), "shuffled labels": (0.10, 0.12)}.items() for k, v in enumerate(vals)])
    s = _study().summarise(long, None).iloc[0]
    sd = pd.Series([0.70, 0.72]).std()                       # every set has the same sample sd over its two seeds
    assert abs(s.mean_gap_points - 10.0) < 1e-9 and abs(s.gap_in_sd - 0.10 / sd) < 1e-9 and s.sets == 4


@pytest.mark.slow
def test_study_smoke_run(tmp_path):
    long, summary = _study().main(["--smoke", "--protocols", "hard", "--presets", "embedded", "--repeats", "1",
                                   "--workers", "1", "--out", str(tmp_path)])
    assert set(long["set"]) == {"random real s0", "random real s1", "shuffled labels", "DiT pool CFG 4", "least confident real"}
    assert (tmp_path / "sensitivity_long.csv").exists() and (tmp_path / "sensitivity.png").exists()
    assert len(summary) == 1 and summary.iloc[0].sets == 5
