"""The results command on saved `dvc exp show --json` output (a real one, from the tiny grid of
test_grid.py: cells tiny-none and tiny-poe, and a failed cell broken-svhn), with no DVC run."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from trustdd.experiments import exp_show, results

PROJECT = Path(__file__).resolve().parents[1]
SAVED = PROJECT / "tests" / "data" / "exp_show_tiny.json"


@pytest.fixture(scope="module")
def raw():
    return json.loads(SAVED.read_text())


def own_metrics(raw, name):
    for commit in raw:
        for exp in commit.get("experiments") or []:
            if exp["name"] == name:
                return exp["revs"][0]["data"]["metrics"]["metrics/metrics.json"]["data"]
    raise KeyError(name)


def test_parse_reads_commits_and_experiments_with_their_state(raw):
    experiments = exp_show.parse(raw)
    kinds = {e.name: (e.kind, e.state) for e in experiments}
    assert kinds["tiny-none"] == ("experiment", "success") and kinds["broken-svhn"] == ("experiment", "failed")
    assert kinds["workspace"] == ("workspace", "success")
    tiny = next(e for e in experiments if e.name == "tiny-none")
    commit = next(e for e in experiments if e.kind == "commit")
    assert tiny.baseline == commit.rev and tiny.params["outliers"]["source"] == "none"
    with pytest.raises(exp_show.ExpShowError, match="expected the list"):
        exp_show.parse({"rev": "x"})


def test_frame_has_one_row_per_experiment_set_and_architecture_with_its_own_metrics(raw):
    df = results.select(results.frame(exp_show.parse(raw)), grid="tiny")
    assert len(df) == 2 * 3  # two cells x (distilled, init, random) x convnet; the failed cell has no row
    assert set(df["experiment"]) == {"tiny-none", "tiny-poe"} and set(df["architecture"]) == {"convnet"}
    for name in ("tiny-none", "tiny-poe"):
        own = own_metrics(raw, name)
        for set_name in ("distilled", "init", "random"):
            row = df[(df["experiment"] == name) & (df["training_set"] == set_name)].iloc[0]
            m = own[set_name]["convnet"]
            assert row["accuracy"] == m["accuracy"]["mean"] and row["accuracy_std"] == m["accuracy"]["std"]
            assert row["energy_fpr95_out"] == m["energy"]["fpr95_out"]["mean"]
            assert row["ipc"] == 2 and row["outliers.source"] == name.split("-")[1] and row["method"] == "mtt"
        distilled = df[(df["experiment"] == name) & (df["training_set"] == "distilled")].iloc[0]
        assert distilled["gain_init_msp_auroc"] == own["distilled_minus_init"]["convnet"]["msp"]["auroc"]["mean"]
    # params columns keep their dotted names; lists are compact JSON
    assert "distill.mtt.syn_steps" in results.params_columns(df)
    assert df["ood.sets"].iloc[0] == '["mnist","uniform_noise"]'
    assert not any(results.is_metric(c) for c in results.params_columns(df))


def test_markdown_tables_are_the_cells_numbers_by_method_outliers_and_ipc(raw):
    experiments = exp_show.parse(raw)
    df = results.select(results.frame(experiments), grid="tiny")
    md = results.markdown(df, experiments, "python -m trustdd.experiments.results --grid tiny")
    none, poe = own_metrics(raw, "tiny-none"), own_metrics(raw, "tiny-poe")
    acc = lambda m: f"{m['distilled']['convnet']['accuracy']['mean']:.2f} ± {m['distilled']['convnet']['accuracy']['std']:.2f}"
    accuracy = md.split("**Accuracy (%) ↑**")[1].split("**")[0]
    assert f"| mtt | none | {acc(none)} |\n| mtt | poe | {acc(poe)} |" in accuracy  # plain DD first
    gain = poe["distilled"]["convnet"]["msp"]["auroc"]["mean"] - none["distilled"]["convnet"]["msp"]["auroc"]["mean"]
    block = md.split("**Gain over no outliers (same method and IPC): MSP AUROC**")[1].split("**")[0]
    assert f"| mtt | poe | {gain:+.2f} |" in block and "| mtt | none | – |" in block
    paired = poe["distilled_minus_random"]["convnet"]["accuracy"]
    assert f"| mtt | poe | {paired['mean']:+.2f} ± {paired['std']:.2f} |" in md
    # which commit and which params
    commit = next(e for e in experiments if e.kind == "commit").rev[:7]
    assert f"| tiny-none | {commit} | `outliers.source=\"none\"` |" in md
    assert f"| tiny-poe | {commit} | none (the commit's own params) |" in md


def test_the_command_on_a_folder_of_saved_json_writes_table_csv_and_plot(tmp_path, capsys):
    folder = tmp_path / "saved"
    folder.mkdir()
    shutil.copy(SAVED, folder / "a.json")
    out = tmp_path / "out"
    assert results.main(["--from", str(folder), "--grid", "tiny", "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert table.startswith(f"Made by `python -m trustdd.experiments.results --from {folder} --grid tiny --out {out}`")
    csv = pd.read_csv(out / "rows.csv")
    assert len(csv) == 6 and sorted(csv["experiment"].unique()) == ["tiny-none", "tiny-poe"]
    assert (out / "scatter.png").read_bytes()[:4] == b"\x89PNG"
    # nothing matches: a clear error, exit 2
    assert results.main(["--from", str(folder), "--grid", "nope"]) == 2
    assert "no finished experiment of grid 'nope'" in capsys.readouterr().err
    (folder / "b.json").write_text("{}")
    assert results.main(["--from", str(folder)]) == 2
    assert "b.json: expected the list" in capsys.readouterr().err


def test_the_readme_table_is_the_committed_metrics():
    """The README's results block is what `make results` makes from metrics/ and params.yaml as committed:
    a hand edit, or metrics that moved without it, fails here."""
    experiments = results.workspace(PROJECT)
    df = results.frame(experiments)
    expected = results.markdown(df, experiments, "python -m trustdd.experiments.results --workspace --update README.md")
    assert results.block(PROJECT / "README.md") == expected
    head = json.loads((PROJECT / "metrics/metrics.json").read_text())["distilled"]["convnet"]["accuracy"]
    assert f"**{head['mean']:.2f} ± {head['std']:.2f}**" in expected


def test_update_replaces_only_the_block(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{results.BEGIN}: note -->\nold\n{results.END}\nafter\n")
    results.update(doc, "new\n")
    assert doc.read_text() == f"before\n{results.BEGIN}: note -->\nnew\n{results.END}\nafter\n"
    assert results.block(doc) == "new\n"
    (tmp_path / "plain.md").write_text("no block\n")
    with pytest.raises(results.ResultsError, match="no .* block to fill"):
        results.update(tmp_path / "plain.md", "x")


def test_the_docs_grid_tables_are_what_their_saved_experiments_give():
    """docs/results/default/table.md is the results command's output on the saved `dvc exp show` beside it."""
    folder = PROJECT / "docs" / "results" / "default"
    command = "python -m trustdd.experiments.results --from docs/results/default/exp_show.json --grid default --out docs/results/default"
    experiments = [e for e in exp_show.parse(exp_show.read_saved([folder / "exp_show.json"])) if e.kind != "workspace"]
    df = results.select(results.frame(experiments), grid="default")
    assert sorted(df["experiment"].unique()) == ["default-none-ipc1", "default-none-ipc10", "default-poe-ipc1", "default-poe-ipc10"]
    assert (folder / "table.md").read_text() == results.markdown(df, experiments, command)
    # the poe / ipc 10 cell is the default, measured on the platform that made the grid (3bdb27d's, not recorded):
    # on another platform the committed metrics/metrics.json agrees with it within repro-check's tolerance
    from trustdd.experiments import repro

    committed = json.loads((PROJECT / "metrics/metrics.json").read_text())
    cell = next(e for e in experiments if e.name == "default-poe-ipc10").metrics
    rows, problems = repro.compare(cell, committed, 3)
    assert problems == [] and all(r.ok for r in rows), [r for r in rows if not r.ok]


def test_tables_fall_back_to_the_scores_measured():
    """A run that measured only ODIN gets ODIN columns, not an error about MSP."""
    ms = lambda m: {"mean": m, "std": 0.5}  # noqa: E731
    row = {"accuracy": ms(80.0), "odin": {"auroc": ms(90.0), "fpr95_in": ms(30.0), "fpr95_out": ms(20.0)}}
    params = {"method": "mtt", "ipc": 10, "dataset": "fashion_mnist", "outliers": {"source": "poe"}}
    exps = [exp_show.Experiment(n, n * 8, "c" * 40, "experiment", "success", params={**params, "ipc": i},
                                metrics={"distilled": {"convnet": row}}) for n, i in (("g-a", 1), ("g-b", 10))]
    df = results.frame(exps)
    assert results.scores_of(df) == ["odin"]
    md = results.markdown(df, exps, "cmd")
    assert "**ODIN AUROC ↑**" in md and "| mtt | poe | 90.00 ± 0.50 | 90.00 ± 0.50 |" in md
    one = results.markdown(df[df["experiment"] == "g-a"], exps, "cmd")
    assert "| training set | accuracy ↑ | ODIN AUROC ↑ | ODIN FPR95 (InD+) ↓ | ODIN FPR95 (OOD+) ↓ |" in one


def test_a_commit_and_its_experiment_with_the_same_params_get_a_row_each():
    """Without a filter the commit's own row joins its experiments (the default grid's poe / ipc 10 cell has
    the commit's params); a row per kind then tells them apart."""
    saved = PROJECT / "docs" / "results" / "default" / "exp_show.json"
    experiments = [e for e in exp_show.parse(exp_show.read_saved([saved])) if e.kind != "workspace"]
    df = results.frame(experiments)
    commit = next(e for e in experiments if e.kind == "commit")
    assert commit.name in set(df["experiment"]) and "default-poe-ipc10" in set(df["experiment"])
    md = results.markdown(df, experiments, "cmd")
    accuracy = md.split("**Accuracy (%) ↑**")[1].split("**")[0]
    assert "| method | outliers.source | kind | ipc 1 | ipc 10 |" in accuracy
    assert "| mtt | poe | commit | – | 82.12 ± 0.20 |" in accuracy
    assert "| mtt | poe | experiment | 72.93 ± 0.71 | 82.12 ± 0.20 |" in accuracy and " / " not in accuracy


def test_the_comparison_fits_a_terminal_and_keeps_what_tells_the_experiments_apart(capsys):
    saved = ["--from", str(PROJECT / "docs/results/default/exp_show.json"), "--grid", "default"]
    assert results.main([*saved, "--compare", "--width", "120"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 120 and len(lines) == 5  # a header and the grid's four cells
    assert lines[0].split() == ["experiment", "ipc", "source", "acc", "MSP", "AUROC", "MSP", "FPR95", "acc", "-", "init"]
    row = next(line for line in lines if line.strip().startswith("default-none-ipc1 "))
    assert row.split()[:3] == ["default-none-ipc1", "1", "none"] and "-6.26 ± 2.24" in row
    # narrower than the table: params go from the right, and the note names them
    assert results.main([*saved, "--compare", "--width", "60"]) == 0
    out = capsys.readouterr().out
    assert "(not shown, to fit 60 columns: ipc, source; --csv or --md for every column)" in out
    assert results.main([*saved, "--csv"]) == 0
    csv = capsys.readouterr().out.splitlines()
    assert csv[0] == "experiment,ipc,source,acc,MSP AUROC,MSP FPR95,acc - init" and len(csv) == 5


def test_short_param_names_stay_unique():
    names = results._short_names(["distill.mtt.lr_img", "distill.dsa.lr_img", "ipc", "outliers.source"])
    assert names == {"distill.mtt.lr_img": "mtt.lr_img", "distill.dsa.lr_img": "dsa.lr_img", "ipc": "ipc",
                     "outliers.source": "source"}
