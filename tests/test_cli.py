"""The `activa` command line and the inference scripts, on shrunken configurations."""

import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import activa_ppl as ap
from activa_ppl import training
from activa_ppl.cli import build_parser, main
from activa_ppl.training import TrainingDiverged


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """simulate → train through the CLI, as a user would."""
    root = tmp_path_factory.mktemp("cli")
    assert main(["simulate", "--num-scms", "40", "--num-samples", "20", "--seed", "1",
                 "--out", str(root / "data")]) == 0
    assert main(["train", "--data", str(root / "data"), "--out", str(root / "model"), "--preset", "tiny",
                 "--steps", "20", "--eval-every", "10", "--quiet"]) == 0
    return root


def test_simulate_train_predict(trained, tmp_path, capsys):
    data = ap.load_dataset(trained / "data")
    obs = data.observational[0]
    pd.DataFrame(obs, columns=["gene_a", "gene_b"]).to_csv(tmp_path / "obs.csv", index=False)
    out = tmp_path / "samples.csv"
    assert main(["predict", "--model", str(trained / "model"), "--data", str(tmp_path / "obs.csv"),
                 "--target", "gene_a", "--num-samples", "50", "--out", str(out)]) == 0
    samples = pd.read_csv(out)
    assert list(samples.columns) == ["gene_a", "gene_b"] and samples.shape == (50, 2)
    assert np.all(np.isfinite(samples.to_numpy()))
    assert "ATE" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("a,b\n", "no rows"),
    ("a,a\n1,2\n3,4\n", "duplicate"),
    ("a,b\n1,x\n3,4\n", "non-numeric"),
    ("a,b\n1,nan\n3,4\n", "non-finite"),
    ("a,b\n1,2\n", "at least 2 samples"),
])
def test_predict_bad_csv(trained, tmp_path, capsys, content, message):
    (tmp_path / "bad.csv").write_text(content)
    code = main(["predict", "--model", str(trained / "model"), "--data", str(tmp_path / "bad.csv"),
                 "--target", "a", "--out", str(tmp_path / "s.csv")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_predict_bad_arguments(trained, tmp_path, capsys):
    pd.DataFrame({"a": [0.0, 1.0, 2.0], "b": [1.0, 0.0, 2.0]}).to_csv(tmp_path / "ok.csv", index=False)
    base = ["predict", "--data", str(tmp_path / "ok.csv"), "--out", str(tmp_path / "s.csv")]
    assert main(base + ["--model", str(trained / "model"), "--target", "zzz"]) == 2
    assert "unknown variable 'zzz'" in capsys.readouterr().err
    assert main(base + ["--model", str(trained / "model"), "--target", "a", "--intervention", "3"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(base + ["--model", "no-such-model", "--target", "a"]) == 2
    assert "no pretrained model" in capsys.readouterr().err


def test_cli_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "activa_ppl.cli", "train", "--data", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "m")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("activa: error:") and "Traceback" not in proc.stderr


def test_demo_smoke(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "10", "--num-scms", "60", "--eval-scms", "3",
                 "--preset", "tiny", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "Gaussian Cond." in printed and "ACTIVA" in printed
    for name in ("demo.png", "results.json", "results.md", "model/config.json"):
        assert (tmp_path / name).is_file()
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the recommended recipe by default (--paper-model: Eq. 4 as written)
    assert json.loads((tmp_path / "results.json").read_text())["model"] == "recommended recipe"
    model = json.loads((tmp_path / "model" / "config.json").read_text())["model_config"]
    assert model["decoder_context"] is True and model["beta"] == 1.0 and model["num_predictive_latents"] == 100


def test_inference_train_script(tmp_path):
    proc = subprocess.run(
        [sys.executable, "inference/train.py", "--num-scms", "30", "--num-samples", "10", "--preset", "tiny",
         "--steps", "10", "--eval-every", "5", "--out", str(tmp_path / "model")],
        capture_output=True, text=True, cwd=__import__("pathlib").Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr
    assert ap.load(tmp_path / "model").info["num_steps"] == 10


def test_simulate_refuses_datasets_that_cannot_be_used(tmp_path, capsys):
    assert main(["simulate", "--num-samples", "1", "--out", str(tmp_path / "d")]) == 2
    assert "--num-samples must be at least 2" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_train_exposes_the_nonfinite_policy():
    args = build_parser().parse_args(["train", "--data", "d", "--out", "m", "--on-nonfinite", "retry",
                                      "--max-retries", "2"])
    assert (args.on_nonfinite, args.max_retries) == ("retry", 2)


def test_train_standardize_flag(trained, tmp_path):
    """`activa train --standardize` trains a unit-invariant model with the dataset's value."""
    assert main(["train", "--data", str(trained / "data"), "--out", str(tmp_path / "model"), "--preset", "tiny",
                 "--steps", "4", "--eval-every", "2", "--standardize", "--quiet"]) == 0
    config = ap.load(tmp_path / "model").activa.config
    assert config.standardize and config.intervention_values == (5.0,)


def _inference_train_parser():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "inference" / "train.py"
    spec = importlib.util.spec_from_file_location("inference_train", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def _defaults(parser, required):
    """``{dest: default}`` of every option of ``parser`` parsed with only ``required``."""
    return vars(parser.parse_args(required))


def test_train_options_are_shared_with_the_inference_script():
    """`activa train` and inference/train.py: the same options with the same defaults, except the
    script's on-the-fly simulation options, its optional --data and its larger --steps."""
    cli = build_parser().parse_args(["train", "--data", "d", "--out", "m"])
    cli = {k: v for k, v in vars(cli).items() if k not in ("command", "func")}
    script = _defaults(_inference_train_parser(), ["--data", "d", "--out", "m"])
    simulation = {"noise", "num_vars", "num_scms", "num_samples", "data_seed"}
    assert set(script) - set(cli) == simulation and set(cli) <= set(script)
    differ = {k for k in cli if cli[k] != script[k]}
    assert differ == {"steps"} and (cli["steps"], script["steps"]) == (5000, 20000)
    assert (cli["eval_every"], cli["on_nonfinite"], cli["max_retries"], cli["quiet"]) == (250, "stop", 3, False)


def test_every_training_option_shows_its_default():
    import argparse

    from activa_ppl.arguments import add_linear_data_arguments, add_training_arguments

    parser = argparse.ArgumentParser()
    add_linear_data_arguments(parser)
    add_training_arguments(parser)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert "default" in (action.help or "") or "required" in action.help, action.dest


def test_mace_tnp_script_takes_the_shared_subset():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "inference" / "train_mace_tnp.py"
    spec = importlib.util.spec_from_file_location("inference_train_mace_tnp", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = vars(module.build_parser().parse_args(["--out", "m"]))
    script = _defaults(_inference_train_parser(), ["--out", "m"])
    assert args["steps"] == 12000 and args["eval_every"] == 250 and args["data"] is None
    assert all(args[k] == script[k] for k in args if k != "steps")
    assert "standardize" not in args and "data_parallel" not in args
    assert module.build_parser().parse_args(["--out", "m", "--no-progress"]).quiet


def test_resolve_model_path_or_zoo_name(trained, tmp_path):
    from activa_ppl.zoo import resolve_model

    fitted = resolve_model(str(trained / "model"))
    assert fitted.config == ap.load(trained / "model").config
    assert resolve_model(trained / "model").config == fitted.config  # a Path works as well
    zoo = ap.available_models()
    if zoo:
        name = sorted(zoo)[0]
        assert resolve_model(name).config == ap.load_pretrained(name).config
    with pytest.raises(ValueError, match="no pretrained model named 'no-such-model'"):
        resolve_model("no-such-model")
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(ap.CheckpointError, match="no config.json"):
        resolve_model(str(tmp_path / "not-a-model"))


def test_read_csv_lives_in_csv_input(tmp_path):
    from activa_ppl.csv_input import read_csv

    (tmp_path / "obs.csv").write_text("a, b\n1,2\n3,4\n")
    frame = read_csv(tmp_path / "obs.csv")
    assert list(frame.columns) == ["a", "b"] and frame.to_numpy().tolist() == [[1, 2], [3, 4]]
    with pytest.raises(ValueError, match="no such file"):
        read_csv(tmp_path / "missing.csv")


def test_cli_reports_unwritable_output_and_divergence(tmp_path, saved_dataset, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        assert main(["simulate", "--num-scms", "5", "--num-samples", "3", "--out", str(blocker / "sub")]) == 2

        def diverging(*args, **kwargs):
            raise TrainingDiverged("non-finite loss (nan) at step 3; stopped, last good state is step 2")

        monkeypatch.setattr(training, "train", diverging)
        assert main(["train", "--data", str(saved_dataset), "--out", str(tmp_path / "m"), "--preset", "tiny",
                     "--quiet"]) == 2
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith("activa: error:") for line in lines)
    assert "Not a directory" in lines[0]
    assert lines[1].startswith("activa: error: training diverged: non-finite loss (nan) at step 3")


# ==================================================================== issue 18: nothing lost ====
def test_predict_never_overwrites_its_input_or_an_existing_file(trained, tmp_path, capsys):
    """`activa predict --data samples.csv` with the default --out refuses (the input stays);
    an existing --out needs --force."""
    pd.DataFrame({"a": [0.0, 1.0, 2.0], "b": [1.0, 0.0, 2.0]}).to_csv(tmp_path / "samples.csv", index=False)
    before = (tmp_path / "samples.csv").read_bytes()
    with contextlib.chdir(tmp_path):
        for force in ([], ["--force"]):
            code = main(["predict", "--model", str(trained / "model"), "--data", "samples.csv", "--target", "a"]
                        + force)
            err = capsys.readouterr().err
            assert code == 2 and "is the input file --data" in err and err.count("\n") == 1
        assert (tmp_path / "samples.csv").read_bytes() == before
        args = ["predict", "--model", str(trained / "model"), "--data", "samples.csv", "--target", "a",
                "--num-samples", "5", "--out", "pred.csv"]
        assert main(args) == 0
        assert main(args) == 2 and "exists; pass --force" in capsys.readouterr().err
        assert main(args + ["--force"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["simulate", "--num-scms", str(10**9), "--out", "x"], "simulating --num-scms 1000000000"),
    (["train", "--data", "DATA", "--out", "m", "--eval-every", str(2 * 10**9)], "eval_every: at most"),
    (["train", "--data", "DATA", "--out", "m", "--seed", str(2**70)], "seed: expected an integer"),
    (["train", "--data", "DATA", "--out", "m", "--seed", "-1"], "seed: expected an integer"),
])
def test_cli_sizes_and_seeds_are_one_line_errors(trained, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setenv("ACTIVA_MEMORY_LIMIT", "8G")
    argv = [str(trained / "data") if a == "DATA" else str(tmp_path / a) if a in ("x", "m") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("activa: error:") and message in err and err.count("\n") == 1


def test_predict_target_and_header_messages(trained, tmp_path, capsys):
    """`--target ²` is an unknown name (not int()'s message); an unknown target among 10,000
    columns gives a short line; ANSI escapes in a header are refused, not printed raw."""
    pd.DataFrame({"a": [0.0, 1.0, 2.0], "b": [1.0, 0.0, 2.0]}).to_csv(tmp_path / "ok.csv", index=False)
    base = ["predict", "--model", str(trained / "model"), "--out", str(tmp_path / "s.csv")]
    assert main(base + ["--data", str(tmp_path / "ok.csv"), "--target", "²"]) == 2
    assert "unknown variable '²'" in capsys.readouterr().err
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(f"v{j}" for j in range(10_000)) + "\n" + ",".join(["1"] * 10_000) + "\n"
                    + ",".join(["2"] * 10_000) + "\n")
    assert main(base + ["--data", str(wide), "--target", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown variable 'nope'" in err and "(10000 in all)" in err and len(err) < 600
    (tmp_path / "ansi.csv").write_text("\x1b[31mred\x1b[0m,b\n1,2\n3,4\n")
    assert main(base + ["--data", str(tmp_path / "ansi.csv"), "--target", "b"]) == 2
    err = capsys.readouterr().err
    assert "control characters" in err and "\x1b" not in err


def test_models_survives_empty_and_binary_cards(tmp_path, capsys, monkeypatch, saved_model):
    import shutil

    for name, card in (("empty", b""), ("binary", b"\xff\xfe\x00garbage")):
        shutil.copytree(saved_model, tmp_path / name)
        (tmp_path / name / "card.md").write_bytes(card)
    monkeypatch.setenv("ACTIVA_MODELS", str(tmp_path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "empty" in out and "binary" in out


def test_unforeseen_errors_are_one_line(tmp_path, capsys, monkeypatch):
    """Anything unforeseen still reaches the user as one `activa: error:` line, status 2."""
    from activa_ppl import cli

    def broken(args):
        raise TypeError("something nobody checked")

    monkeypatch.setattr(cli, "_cmd_models", broken)
    monkeypatch.delenv("ACTIVA_DEBUG", raising=False)
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("activa: error: internal error, TypeError: something nobody checked") and \
        err.count("\n") == 1


def test_issue18_failures_reach_the_user_as_one_line(trained, tmp_path, capsys, monkeypatch):
    """The issue-18 failures checked at the API elsewhere, here through `activa` as a user meets
    them: resume on other data, forged model and dataset folders, a prediction beyond the memory
    limit. Each is one `activa: error:` line, status 2, no traceback."""
    import json
    import shutil

    def one_line_error(argv, message):
        code, err = main(argv), capsys.readouterr().err
        assert code == 2 and err.startswith("activa: error:") and err.count("\n") == 1, (argv, err)
        assert any(m in err for m in message.split("|")) and "Traceback" not in err, (argv, err)

    train = ["train", "--preset", "tiny", "--steps", "10", "--eval-every", "10", "--quiet",
             "--workdir", str(tmp_path / "work")]
    assert main(train + ["--data", str(trained / "data"), "--out", str(tmp_path / "m1")]) == 0
    assert main(["simulate", "--num-scms", "40", "--num-samples", "20", "--seed", "2",
                 "--out", str(tmp_path / "other")]) == 0
    capsys.readouterr()
    one_line_error(train + ["--data", str(tmp_path / "other"), "--out", str(tmp_path / "m2")], "other data")
    assert not (tmp_path / "m2").exists()

    pd.DataFrame({"a": [0.0, 1.0, 2.0], "b": [1.0, 0.0, 2.0]}).to_csv(tmp_path / "ok.csv", index=False)
    config = json.loads((trained / "model" / "config.json").read_text())
    long_int = json.dumps(config).replace('"info": {', '"info": {"n": ' + "9" * 5000 + ", ", 1)
    embed = json.dumps(dict(config, model_config=dict(config["model_config"], embed_dim=2**40)))
    # embed_dim=2**40 is refused by the configuration check or, first, by the memory estimate
    for text, message in ((embed, "model_config|would need about"), (long_int, "not valid JSON")):
        forged = tmp_path / "forged"
        shutil.rmtree(forged, ignore_errors=True)
        shutil.copytree(trained / "model", forged)
        (forged / "config.json").write_text(text)
        one_line_error(["predict", "--model", str(forged), "--data", str(tmp_path / "ok.csv"), "--target", "a",
                        "--out", str(tmp_path / "s.csv"), "--force"], message)

    data = tmp_path / "data"
    shutil.copytree(trained / "data", data)
    manifest = json.loads((data / "manifest.json").read_text())
    (data / "manifest.json").write_text(json.dumps(dict(manifest, num_interventions=10**9)))
    one_line_error(["train", "--data", str(data), "--out", str(tmp_path / "m3"), "--preset", "tiny"],
                   "num_interventions must lie in 1..65536")

    rows = tmp_path / "rows.csv"
    pd.DataFrame(np.ones((2000, 2)), columns=["a", "b"]).to_csv(rows, index=False)
    monkeypatch.setenv("ACTIVA_MEMORY_LIMIT", "1M")
    one_line_error(["predict", "--model", str(trained / "model"), "--data", str(rows), "--target", "a",
                    "--out", str(tmp_path / "s2.csv")], "more than the limit of")
