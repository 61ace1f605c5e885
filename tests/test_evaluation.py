"""Tests for the evaluation harness: task records, averaging, method specs, Table 1 and figures."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from activa_ppl.cli import main
from activa_ppl.evaluation import evaluate, evaluate_tasks, summarize
from activa_ppl.predictors import (Predictor, gaussian_conditional_predictor, linear_causal_predictor,
                                   predictor_from_spec, register_method)
from activa_ppl.mixture import GaussianMixture
from activa_ppl.report import format_table1, parse_dataset_spec, run_evaluation
from activa_ppl.simulate import linear_dataset
from helpers import dataset_file, small_dataset


@pytest.fixture(scope="module")
def gauss2():
    return linear_dataset(num_scms=200, num_vars=2, noise="gauss", num_samples=100, seed=3)


def _records(rows):
    return pd.DataFrame(rows, columns=["method", "scm", "query", "marginal", "metric", "value"])


def test_task_and_scm_averages_by_hand():
    # SCM 0 has one task (value 4), SCM 1 two tasks (values 0 and 2).
    records = _records([("m", 0, 1, "non_descendants", "energy", 4.0),
                        ("m", 1, 0, "non_descendants", "energy", 0.0),
                        ("m", 1, 1, "non_descendants", "energy", 2.0)])
    task = summarize(records, "task")["m"]["non_descendants"]["energy"]
    assert task["mean"] == pytest.approx(2.0) and task["n"] == 3 and task["n_scms"] == 2
    # cluster-robust: residual sums per SCM are 2 and (-2 + 0) = -2 -> sqrt(8) / 3
    assert task["se"] == pytest.approx(np.sqrt(8) / 3)
    scm = summarize(records, "scm")["m"]["non_descendants"]["energy"]
    assert scm["mean"] == pytest.approx((4.0 + 1.0) / 2) and scm["n"] == 2
    assert scm["se"] == pytest.approx(np.std([4.0, 1.0], ddof=1) / np.sqrt(2))
    with pytest.raises(ValueError, match="average"):
        summarize(records, "sample")


def test_records_cover_tasks_and_skip_empty_marginals(gauss2):
    records = evaluate_tasks(gauss2, {"lc": linear_causal_predictor()}, max_scms=15, progress=False)
    assert set(records.columns) == {"method", "scm", "query", "marginal", "metric", "value"}
    assert records["scm"].nunique() == 15 and set(records["query"]) == {0, 1}
    assert "all" not in set(records["marginal"])  # the baseline does not predict V_t
    # in a 2-variable SCM with an edge, do(cause) has no non-descendant, do(effect) no descendant
    desc = records[(records.marginal == "descendants") & (records.metric == "nll")]
    for s, q in desc[["scm", "query"]].itertuples(index=False):
        other = 1 - q
        assert gauss2.adjacency[s, q, other] == 1
    counts = records.groupby(["marginal", "metric"]).size()
    assert counts["all_but_target", "nll"] == 30
    assert counts["descendants", "nll"] + counts["non_descendants", "nll"] == 30
    assert np.isfinite(records["value"]).all()


def test_linear_causal_beats_gaussian_conditional_on_non_descendants(gauss2):
    results = evaluate(gauss2, {"gc": gaussian_conditional_predictor(), "lc": linear_causal_predictor()},
                       progress=False)
    gc, lc = results["gc"]["non_descendants"], results["lc"]["non_descendants"]
    assert lc["energy"]["mean"] < 0.2 * gc["energy"]["mean"]
    assert lc["ate_mae"]["mean"] < 0.2 * gc["ate_mae"]["mean"]
    # on descendants both regress the effect on the cause (variance estimators differ slightly)
    assert results["gc"]["descendants"]["nll"]["mean"] == pytest.approx(
        results["lc"]["descendants"]["nll"]["mean"], rel=2e-2)


def test_wrong_batch_shape_is_reported(gauss2):
    def bad(tasks, dataset):
        return GaussianMixture.gaussian(np.zeros((1, 2)), np.eye(2)[None])

    with pytest.raises(ValueError, match="batch shape"):
        evaluate_tasks(gauss2, {"bad": Predictor(bad, label="bad")}, max_scms=3, progress=False)


def test_method_specs():
    assert predictor_from_spec("linear-causal").label == "Linear Causal"
    assert predictor_from_spec(" Gaussian-Conditional ").label == "Gaussian Cond."
    with pytest.raises(ValueError, match="known methods: .*linear-causal"):
        predictor_from_spec("oracle")
    with pytest.raises(ValueError, match="needs a model"):
        predictor_from_spec("activa")
    with pytest.raises(ValueError, match="takes no argument"):
        predictor_from_spec("linear-causal:x")
    with pytest.raises(ValueError, match="no pretrained model"):
        predictor_from_spec("activa:no-such-model")
    with pytest.raises(ValueError):
        register_method("Bad:Name", lambda argument, seed=0: None)


def test_privileged_marks(gauss2):
    beta = linear_dataset(num_scms=5, num_vars=2, noise="beta", seed=0)
    lc, gc = linear_causal_predictor(), gaussian_conditional_predictor()
    assert lc.label_for(gauss2) == "Linear Causal (O)"
    assert lc.label_for(beta) == "Linear Causal (PI)"
    assert gc.label_for(beta) == "Gaussian Cond."


def test_dataset_spec_parsing():
    assert parse_dataset_spec("data/g2") == parse_dataset_spec("data/g2@")
    spec = parse_dataset_spec("Gauss 2=data/g2@models/gauss2")
    assert (spec.label, spec.path, spec.model) == ("Gauss 2", "data/g2", "models/gauss2")
    with pytest.raises(ValueError, match="empty dataset path"):
        parse_dataset_spec("label=@model")


def test_table_marks_best_and_second_best():
    entry = lambda m: {"mean": m, "se": 0.01, "n": 10}  # noqa: E731
    report = {"datasets": [{"label": "D", "methods": [
        {"label": "a", "results": {"all_but_target": {"energy": entry(0.3), "nll": entry(1.0)}}},
        {"label": "b", "results": {"all_but_target": {"energy": entry(0.1), "nll": entry(2.0)}}},
        {"label": "c", "results": {"all_but_target": {"energy": entry(0.2), "nll": entry(3.0)}}},
    ]}]}
    table = format_table1(report)
    rows = {line.split("|")[2].strip(): line for line in table.splitlines()[2:]}
    assert "**0.10 ± 0.01**" in rows["b"] and "*0.20 ± 0.01*" in rows["c"]
    assert "**1.00 ± 0.01**" in rows["a"] and "*2.00 ± 0.01*" in rows["b"]
    assert rows["a"].count("—") == 6  # All, Desc., Non-desc. x (ERG, NLL) are missing


def test_activa_evaluate_cli_writes_table_json_csv_and_figures(tmp_path, gauss2, capsys):
    gauss2.save(tmp_path / "g2")
    out = tmp_path / "eval"
    code = main(["evaluate", "--dataset", f"Gauss two={tmp_path / 'g2'}", "--methods",
                 "gaussian-conditional,linear-causal", "--out", str(out), "--max-scms", "12",
                 "--quiet"])
    assert code == 0
    assert "Linear Causal (O)" in capsys.readouterr().out
    report = json.loads((out / "results.json").read_text())
    (ds,) = report["datasets"]
    assert ds["label"] == "Gauss two" and ds["num_scms"] == 12
    assert [m["label"] for m in ds["methods"]] == ["Gaussian Cond.", "Linear Causal (O)"]
    assert ds["methods"][1]["privileged"] == ["true graph", "intervention value"]
    assert "se" in ds["methods"][0]["results"]["all_but_target"]["energy"]
    for name in ("table1.md", "records.csv.gz", "figure4.png", ds["figure3"]):
        assert (out / name).stat().st_size > 0
    assert (out / "figure4.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = pd.read_csv(out / "records.csv.gz")
    assert set(records["dataset"]) == {"Gauss two"}
    text = (out / "table1.md").read_text()
    assert "| Gauss two | Gaussian Cond. | — | — |" in text


def test_evaluate_cli_errors(tmp_path, gauss2, capsys):
    gauss2.save(tmp_path / "g2")
    assert main(["evaluate", "--dataset", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert main(["evaluate", "--dataset", str(tmp_path / "g2"), "--methods", "activa:{model}",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "activa: error:" in err and "needs a model" in err


def test_run_evaluation_with_activa_model(tmp_path, gauss2, tiny_fitted):
    gauss2.save(tmp_path / "g2")
    tiny_fitted.save(tmp_path / "model")
    report = run_evaluation([f"{tmp_path / 'g2'}@{tmp_path / 'model'}"], ["activa:{model}", "linear-causal"],
                            tmp_path / "out", max_scms=5, figure_scms=2, progress=False)
    activa = report["datasets"][0]["methods"][0]
    assert activa["label"] == "ACTIVA" and activa["privileged"] == []
    assert "all" in activa["results"]  # ACTIVA predicts V_t too


def test_run_evaluation_bad_input(tmp_path, saved_dataset, saved_model):
    broken = tmp_path / "broken"
    shutil.copytree(saved_dataset, broken)
    dataset_file(broken).write_bytes(b"PK\x03\x04 not a zip")
    two = tmp_path / "two"
    small_dataset(num_interventions=2, intervention_index=np.ones((4, 2), np.int32)).save(two)
    corrupt_model = tmp_path / "corrupt_model"
    shutil.copytree(saved_model, corrupt_model)
    for p in corrupt_model.glob("params-*.npz"):
        p.write_bytes(p.read_bytes()[:100])
    cases = [
        ([str(broken)], ["gaussian-conditional"], {}, "checksum mismatch"),
        ([str(saved_dataset / "manifest.json")], ["gaussian-conditional"], {}, "is not a directory"),
        ([str(saved_dataset)], ["no-such-method"], {}, "unknown method"),
        ([str(saved_dataset)], ["gaussian-conditional"], {"split": "training"}, "split must be one of"),
        ([str(saved_dataset)], ["gaussian-conditional"], {"max_scms": 0}, "max_scms must be positive"),
        ([str(saved_dataset)], [f"activa:{corrupt_model}"], {}, "SHA-256 differs"),
        ([str(two)], [f"activa:{saved_model}"], {}, r"intervention_index: values must lie in 0..0"),
    ]
    for datasets, methods, kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            run_evaluation(datasets, methods, tmp_path / "out", progress=False, figure_scms=0, **kwargs)
