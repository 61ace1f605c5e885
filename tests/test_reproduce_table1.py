"""inference/reproduce_table1.py: the target checks and the generated card blocks."""

import importlib.util
import sys
from pathlib import Path

import pytest

import activa_ppl as ap

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("reproduce_table1", ROOT / "inference" / "reproduce_table1.py")
r = importlib.util.module_from_spec(spec)
sys.modules.setdefault("reproduce_table1", r)  # dataclasses look their module up there
spec.loader.exec_module(r)


def _ds(label, activa, lc, gc, mace=None):
    """A one-dataset report entry; each of activa/lc/gc/mace maps (marginal, metric) -> mean."""
    def row(name, method, cells):
        results = {}
        for (m, k), v in cells.items():
            results.setdefault(m, {})[k] = {"mean": v, "se": 0.0, "n": 10, "n_scms": 5}
        return {"label": name, "method": method, "results": results, "privileged": []}
    return {"label": label, "path": "data/x", "num_scms": 5, "num_tasks": 10,
            "methods": [row("ACTIVA", "ACTIVA", activa), row("Linear Causal (O)", "Linear Causal", lc),
                        row("Gaussian Cond.", "Gaussian Cond.", gc)]
            + ([row("MACE-TNP", "MACE-TNP", mace)] if mace is not None else [])}


def test_two_variable_targets():
    act = {("all_but_target", "energy"): 0.15, ("non_descendants", "energy"): 0.02,
           ("all_but_target", "nll"): 0.4}
    lc = {("all_but_target", "energy"): 0.09, ("all_but_target", "nll"): 0.5}
    gc = {("non_descendants", "energy"): 1.4}
    checks = r.target_checks(_ds("Beta 2", act, lc, gc))
    assert [ok for _, ok, _ in checks] == [False, True, True]  # 1.67x > 1.3x; 70x below; 0.4 < 0.5
    assert "1.67×" in checks[0][2]
    assert len(r.target_checks(_ds("Gauss 2", act, lc, gc))) == 2  # the NLL target is Beta 2's only
    act[("all_but_target", "energy")] = 0.116  # 1.29x is met, 1.31x is not
    assert r.target_checks(_ds("Gauss 2", act, lc, gc))[0][1]
    act[("all_but_target", "energy")] = 0.118
    assert not r.target_checks(_ds("Gauss 2", act, lc, gc))[0][1]


def test_eight_variable_targets_compare_every_marginal_with_gc():
    cells = [(m, k) for m in ("all_but_target", "descendants", "non_descendants") for k in ("energy", "nll")]
    act = {c: 1.0 for c in cells}
    gc = {c: 2.0 for c in cells}
    gc[("descendants", "energy")] = 0.5
    checks = r.target_checks(_ds("Gauss 8", act, {}, gc))
    assert len(checks) == 6 and sum(ok for _, ok, _ in checks) == 5  # no MACE-TNP row: no MACE check
    assert not dict((t, ok) for t, ok, _ in checks)["Desc. ERG below Gaussian Cond."]
    checks = dict((t, ok) for t, ok, _ in r.target_checks(_ds("Beta 8", act, {}, gc, mace={c: 0.9 for c in cells})))
    assert len(checks) == 7 and not checks["All∖V_t ERG ≤ MACE-TNP"]  # 1.0 > 0.9


def test_sergio_targets_ask_for_the_lowest_nll_of_all_methods():
    cells = [(m, k) for m in ("all", "all_but_target", "descendants", "non_descendants") for k in ("energy", "nll")]
    act = {c: 1.0 for c in cells}
    gc = {c: 2.0 for c in cells if c[0] != "all"}
    lc = dict(gc)
    lc[("descendants", "nll")] = 0.5  # the privileged baseline wins one marginal
    mace = {c: 1.5 for c in cells}
    checks = r.target_checks(_ds("SERGIO", act, lc, gc, mace=mace))
    nll = {t: (ok, m) for t, ok, m in checks if "lowest" in t}
    assert len(nll) == 4  # All, All∖V_t, Desc., Non-desc.
    assert not nll["Desc. NLL lowest of all methods"][0] and "Linear Causal (O) 0.500" in nll["Desc. NLL lowest of all methods"][1]
    assert all(ok for t, (ok, _) in nll.items() if not t.startswith("Desc."))
    assert "All∖V_t ERG ≤ MACE-TNP" not in {t for t, _, _ in checks}  # a Gauss 8 / Beta 8 target only


def test_card_block_and_replace_block():
    report = {"datasets": [], "machine": "test machine", "average": "task", "command": "python x.py"}
    ds = _ds("Gauss 8", {("all_but_target", "energy"): 1.0}, {}, {("all_but_target", "energy"): 2.0})
    block = r.card_block(report, ds)
    assert "| Gauss 8 | ACTIVA |" in block and "test machine" in block and "| yes |" in block
    text = "a\n<!-- generated:results:Gauss 8 -->\nold\n<!-- /generated:results:Gauss 8 -->\nb"
    new = r.replace_block(text, "results:Gauss 8", block, where="card")
    assert "old" not in new and new.startswith("a\n") and new.endswith("\nb")
    with pytest.raises(ValueError, match="card has no block"):
        r.replace_block("no markers", "results:Gauss 8", block, where="card")


@pytest.mark.parametrize("model", ["gauss8", "baselines/mace-tnp-gauss8", "gauss2"])
def test_training_block_reads_the_shipped_config(model):
    text = r.training_block(ROOT / "models" / model)
    assert "**Architecture**" in text and "**Training**" in text and "best validation NLL" in text


def test_cards_show_no_machine_path_and_the_intervention_values():
    report = {"datasets": [], "machine": "test machine", "average": "task",
              "command": "python inference/reproduce_table1.py --sergio-networks /opt/x/avici/assets "
                         f"--data-dir={ROOT / 'data'} --max-scms 500"}
    ds = _ds("Gauss 8", {("all_but_target", "energy"): 1.0}, {}, {("all_but_target", "energy"): 2.0})
    ds["path"] = str(ROOT / "data" / "gauss8")
    block = r.card_block(report, ds)
    assert "/opt" not in block and str(ROOT) not in block
    assert "--sergio-networks PATH --data-dir=data --max-scms 500" in block and "`data/gauss8`" in block
    assert "index 0: do(V_t = 5)" in r.training_block(ROOT / "models" / "gauss2")
    assert "index 0: do(V_t = 0) (knockouts)" in r.training_block(ROOT / "models" / "sergio8")


def test_sergio_rows_run_without_avici(tmp_path, monkeypatch):
    """The SERGIO path of the command at a tiny scale, on the shipped E. coli and yeast networks,
    with ``import avici`` failing; only files under tmp_path are written (no card, no docs)."""
    monkeypatch.setitem(sys.modules, "avici", None)  # import avici raises ImportError
    monkeypatch.setattr(r, "DATASETS", {"sergio8": r.Entry(
        "SERGIO", dict(generator="sergio", preset="in_distribution", num_networks=10, num_cells=20, seed=0),
        None)})
    monkeypatch.chdir(ROOT)  # main() changes into the repository; restore the directory after
    doc = tmp_path / "results.md"
    doc.write_text("".join(f"<!-- generated:{n} -->\n<!-- /generated:{n} -->\n"
                           for n in ("table1", "ate", "paper", "figure3", "machine")))
    # --stall-restart-s 0: in this process, where the monkeypatches above hold (a watched child
    # would run every dataset of the real table, with avici importable if installed)
    r.main(["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--doc", str(doc),
            "--max-scms", "1", "--quiet", "--stall-restart-s", "0"])
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["sergio8"]
    meta = ap.load_dataset(tmp_path / "data" / "sergio8").metadata
    assert [g["path"] for g in meta["graph_sources"]] == [
        f"activa_ppl/simulate/networks/{f}" for f in r.SERGIO_NETWORKS]
    text = doc.read_text()
    assert "| SERGIO | Gaussian Cond." in text and str(tmp_path) not in text


def test_training_block_states_the_recipe(tmp_path):
    """A model trained with the recommended recipe says so in its card (context, schedule,
    subsets); Eq. 4's values are not listed."""
    import json

    saved = json.loads((ROOT / "models" / "beta8" / "config.json").read_text())  # the recipe
    (tmp_path / "eq4").mkdir()
    eq4 = json.loads(json.dumps(saved))  # the same model as Eq. 4 with the paper's optimizer
    eq4["model_config"]["decoder_context"] = False
    eq4["info"]["train_config"].update(lr_schedule="constant", warmup_steps=0, samples_per_task=None,
                                       learning_rate=5e-4)
    (tmp_path / "eq4" / "config.json").write_text(json.dumps(eq4))
    assert "decoder_context" not in r.training_block(tmp_path / "eq4")
    assert "warm-up" not in r.training_block(tmp_path / "eq4")
    saved["model_config"]["decoder_context"] = True
    saved["info"]["train_config"].update(lr_schedule="warmup_cosine", warmup_steps=500, samples_per_task=32,
                                         learning_rate=1e-3)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    text = r.training_block(tmp_path)
    assert "decoder_context=True" in text and "covariance_head" not in text
    assert "Adam 0.001 with 500 warm-up steps and a cosine decay, 32-sample subsets of each task per step" in text
    assert "decoder_context=True" in r.training_block(ROOT / "models" / "gauss8")  # the shipped recipe model
    # the objective's extensions are listed where the config has them, and only there
    assert "energy_weight=10.0, exact_targets=True" in r.training_block(ROOT / "models" / "gauss8")
    eq4["model_config"].pop("energy_weight", None)
    eq4["model_config"].pop("exact_targets", None)
    (tmp_path / "eq4" / "config.json").write_text(json.dumps(eq4))
    assert "energy_weight" not in r.training_block(tmp_path / "eq4")
    assert "exact_targets" not in r.training_block(tmp_path / "eq4")


def test_partial_run_merges_into_the_previous_report(tmp_path):
    """``--datasets gauss8``: the new Gauss 8 entry replaces the old one in Table 1 order, the
    other rows and their per-task records are kept, and the machine block names each row's run."""
    import json

    import pandas as pd

    out, partial = tmp_path / "out", tmp_path / "out" / ".partial"
    partial.mkdir(parents=True)
    cells = {("all_but_target", "energy"): 1.0, ("all_but_target", "nll"): 2.0}
    old = {"machine": "old machine", "command": "python inference/reproduce_table1.py --max-scms 500",
           "average": "task", "split": "test", "datasets": [_ds("Gauss 2", cells, cells, cells),
                                                          _ds("Gauss 8", cells, cells, cells)]}
    for row in old["datasets"][0]["methods"]:  # written before rows named their method
        del row["method"]
    (out / "results.json").write_text(json.dumps(old))
    record = dict(method="ACTIVA", scm=0, query=0, marginal="all_but_target", metric="energy", value=1.0)
    pd.DataFrame([dict(record, dataset="Gauss 2"), dict(record, dataset="Gauss 8")]).to_csv(
        out / "records.csv.gz", index=False)
    new = _ds("Gauss 8", {**cells, ("all_but_target", "energy"): 0.5}, cells, cells)
    new.update(command="python inference/reproduce_table1.py --datasets gauss8", machine="new machine",
               date="2026-11-30")
    pd.DataFrame([dict(record, dataset="Gauss 8", value=0.5)]).to_csv(partial / "records.csv.gz", index=False)
    merged = r.merge_partial({"machine": "new machine", "datasets": [new]}, partial, out)

    assert [ds["label"] for ds in merged["datasets"]] == ["Gauss 2", "Gauss 8"]
    assert merged["datasets"][1]["methods"][0]["results"]["all_but_target"]["energy"]["mean"] == 0.5
    assert [row["method"] for row in merged["datasets"][0]["methods"]] == [
        "ACTIVA", "Linear Causal", "Gaussian Cond."]  # recovered from the labels
    records = pd.read_csv(out / "records.csv.gz")
    assert sorted(zip(records["dataset"], records["value"])) == [("Gauss 2", 1.0), ("Gauss 8", 0.5)]
    assert json.loads((out / "results.json").read_text())["datasets"][1]["machine"] == "new machine"
    assert (out / "figure4.png").is_file() and not partial.exists()
    block = r.machine_block(merged)
    assert "* Gauss 2: `python inference/reproduce_table1.py --max-scms 500`, on old machine." in block
    assert "* Gauss 8: `python inference/reproduce_table1.py --datasets gauss8` on 2026-11-30, on new machine." in block
    assert "new machine" in r.card_block(merged, merged["datasets"][1])


def test_unknown_dataset_is_refused(capsys):
    with pytest.raises(SystemExit):
        r.main(["--datasets", "gauss9"])
    assert "unknown ['gauss9']" in capsys.readouterr().err


def test_cards_only_needs_a_previous_report(tmp_path, capsys):
    with pytest.raises(SystemExit):
        r.main(["--cards-only", "--out", str(tmp_path / "none")])
    assert "--cards-only needs a previous run's" in capsys.readouterr().err
