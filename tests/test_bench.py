"""`tca-segment bench --quick`: the trade-off sweep runs end to end and writes what it promises."""

import json

from pipelines.cli import main
from tca_core.model import tuned_acceleration

KEYS = {
    "method",
    "setting",
    "gflops_backbone",
    "speedup_backbone",
    "speedup_model",
    "fidelity_miou",
    "gt_miou",
    "gt_ap",
    "feature_cosine_real",
}


def test_quick_bench_writes_results_plot_and_default(tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert all(KEYS <= set(row) for row in rows)
    full = [r for r in rows if r["method"] == "none"]
    assert len(full) == 1 and full[0]["fidelity_miou"] == 1.0 and full[0]["speedup_backbone"] == 1.0
    methods = {r["method"] for r in rows}
    assert methods == {"none", "clustering", "tca"}
    for row in rows:
        if row["method"] != "none":
            assert row["gflops_backbone"] < full[0]["gflops_backbone"]  # clustering removes work
            assert 0 < row["fidelity_miou"] <= 1 and 0 < row["feature_cosine_real"] <= 1
            assert row["speedup_backbone"] > 0
    assert (tmp_path / "tradeoff.png").stat().st_size > 10_000
    report = json.loads((tmp_path / "report.json").read_text())
    assert {c["against"] for c in report["claim"]} == {"clustering", "clustering+residual"}
    for check in report["claim"]:  # paired bootstrap intervals around the measured differences
        for key in ("gt_miou", "gt_ap"):
            low, high = check[f"{key}_interval"]
            assert low <= check[f"{key}_gain"] <= high
    assert set(report["claim_summary"]) == {"clustering", "clustering+residual"}
    assert (tmp_path / "claim.png").stat().st_size > 10_000
    assert "fastest TCA setting" in capsys.readouterr().out
    if report["default"]:  # the chosen point, ready to sit beside the checkpoint
        tuned = tuned_acceleration(tmp_path, "tca")
        assert (tuned.alpha, tuned.grid) == (report["default"]["config"]["alpha"], report["default"]["config"]["grid"])
