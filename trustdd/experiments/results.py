"""Results as data: experiments read into a pandas DataFrame, one row per experiment x training set x
architecture, with every param and every headline metric; then the paper-shaped tables (rows method /
outliers, columns IPC), the gains over no outliers, over the starting set and over random real images, as
markdown and CSV, and a scatter plot of accuracy against AUROC.

    python -m trustdd.experiments.results                       # this commit and its experiments (dvc exp show --json)
    python -m trustdd.experiments.results --grid default --out docs/results/default --save docs/results/default/exp_show.json
    python -m trustdd.experiments.results --from docs/results/default/exp_show.json --grid default --out docs/results/default
    python -m trustdd.experiments.results --all-commits         # every commit and experiment (dvc exp show -A)
    python -m trustdd.experiments.results --workspace --update README.md   # the README's table, from metrics/ as committed
    python -m trustdd.experiments.results --compare             # experiments side by side, in the terminal's width
    python -m trustdd.experiments.results --grid default --csv  # the same with every column, as CSV (--md: markdown)

Sources: ``dvc exp show --json`` run here (``--rev``, ``--all-commits``), saved outputs of it (``--from``, files or
folders; no DVC needed), or the workspace's own ``params.yaml`` and ``metrics/metrics.json`` (``--workspace``).
Filters: ``--grid NAME`` keeps the experiments named ``NAME-*``, ``--exp NAME`` the named ones.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from trustdd.evaluation.metrics import METRIC_NAMES
from trustdd.evaluation.report import CLASSIFICATION, markdown_table
from trustdd.experiments import exp_show
from trustdd.experiments.overrides import flatten
from trustdd.platform import PATH as PLATFORM_PATH
from trustdd.platform import Platform

SETS = ("distilled", "init", "random", "full")
SOURCE_ORDER = {"none": 0, "poe": 1, "oe": 2}  # rows: plain DD first, then TrustDD's two outlier sources  # training sets, in the order tables list them
SCORES = ("msp", "energy", "knn")  # the scores the paper-shaped tables show (all are in the DataFrame)
SCORE_LABELS = {"msp": "MSP", "energy": "energy", "knn": "KNN", "max_logit": "max-logit", "odin": "ODIN"}
METRIC_LABELS = {"auroc": "AUROC ↑", "fpr95_in": "FPR95 (InD+) ↓", "fpr95_out": "FPR95 (OOD+) ↓"}
BASELINE_LABELS = {"init": "the set the distillation started from", "random": "random real images (and outliers)"}
ID_COLUMNS = ["experiment", "kind", "baseline", "rev", "timestamp", "training_set", "architecture", "skipped_ood_sets"]
BEGIN, END = "<!-- trustdd.experiments.results:begin", "<!-- trustdd.experiments.results:end -->"


class ResultsError(ValueError):
    """No experiment matched, or a file to update has no results block."""


def _cell(value: Any) -> Any:
    """A param value as one DataFrame cell: lists and mappings as compact JSON."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else value


def _metric_columns(prefix: str, block: dict) -> dict[str, float]:
    """``{"msp": {"auroc": {"mean", "std"}}}`` -> ``{prefix + "msp_auroc": mean, ... + "_std": std}``."""
    out: dict[str, float] = {}
    for key, value in block.items():
        if isinstance(value, dict) and "mean" in value:
            out[f"{prefix}{key}"] = value["mean"]
            out[f"{prefix}{key}_std"] = value.get("std")
        elif isinstance(value, dict):
            out.update(_metric_columns(f"{prefix}{key}_", value))
    return out


def frame(experiments: list[exp_show.Experiment]) -> pd.DataFrame:
    """One row per experiment x training set x architecture: identity, metrics (``accuracy``,
    ``msp_auroc``, ``msp_fpr95_in``, ... each with ``_std``; on the distilled rows, ``gain_init_*`` and
    ``gain_random_*``, the paired differences), then every param under its dotted name."""
    rows = []
    for exp in experiments:
        if not exp.metrics or exp.state != "success" or exp.error:
            continue  # queued, running or failed (a failed one shows its commit's metrics), or no metrics yet
        params = {k: _cell(v) for k, v in flatten(exp.params).items()}
        for set_name, archs in exp.metrics.items():
            if set_name.startswith("distilled_minus_") or not isinstance(archs, dict):
                continue
            for arch, metrics in archs.items():
                row: dict[str, Any] = {
                    "experiment": exp.name,
                    "kind": exp.kind,
                    "baseline": exp.short,
                    "rev": exp.rev[:7] if exp.kind != "workspace" else exp.rev,
                    "timestamp": exp.timestamp,
                    "training_set": set_name,
                    "architecture": arch,
                    "skipped_ood_sets": exp.metrics.get("skipped_ood_sets", ""),
                }
                row.update(_metric_columns("", metrics))
                if set_name == "distilled":
                    for base in BASELINE_LABELS:
                        gain = (exp.metrics.get(f"distilled_minus_{base}") or {}).get(arch)
                        if gain:
                            row.update(_metric_columns(f"gain_{base}_", gain))
                row.update(params)
                rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    metric_cols = [c for c in df.columns if c not in ID_COLUMNS and c not in params_columns(df)]
    return df[ID_COLUMNS + metric_cols + params_columns(df)]


def is_metric(column: str) -> bool:
    """Whether a column holds a metric (``frame`` names them; params keep their dotted names)."""
    name = column[: -len("_std")] if column.endswith("_std") else column
    return name.startswith("gain_") or name in CLASSIFICATION or any(name.endswith(f"_{m}") for m in METRIC_NAMES)


def params_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in ID_COLUMNS and not is_metric(c)]


def select(df: pd.DataFrame, grid: str | None = None, names: list[str] | None = None,
           kinds: tuple[str, ...] | None = None) -> pd.DataFrame:
    if df.empty:
        return df
    keep = pd.Series(True, index=df.index)
    if grid:
        keep &= df["experiment"].str.startswith(f"{grid}-") & (df["kind"] == "experiment")
    if names:
        keep &= df["experiment"].isin(names)
    if kinds:
        keep &= df["kind"].isin(kinds)
    return df[keep].reset_index(drop=True)


def _pm(mean: Any, std: Any = None, signed: bool = False, bold: bool = False) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {std:.2f}"
    return f"**{text}**" if bold else text


def scores_of(df: pd.DataFrame) -> list[str]:
    """The scores the tables show: msp, energy and knn where measured; otherwise every score measured."""
    measured = [c[: -len("_auroc")] for c in df.columns if c.endswith("_auroc") and not c.startswith("gain_")]
    return [s for s in SCORES if s in measured] or measured


def row_keys(df: pd.DataFrame) -> list[str]:
    """What tells the cells of one IPC column apart: method and outlier source, then any other param (or
    commit) that takes more than one value at the same IPC; then, where two rows still share a cell, whether
    each is a commit or an experiment, and at last the experiment's name. A param that only moves with IPC (a preset's per-IPC settings) is not a row key."""
    keys = ["method", "outliers.source"]
    candidates = [c for c in params_columns(df) if c not in ("ipc", "dataset", *keys)] + ["baseline"]
    for col in candidates:
        if col in df and (df.groupby("ipc")[col].nunique(dropna=False) > 1).any():
            keys.append(col)
    for extra in ("kind", "experiment"):  # the same cell twice: a commit and an experiment of it, say
        if df.duplicated(keys + ["ipc"]).any():
            keys.append(extra)
    return keys


def _groups(df: pd.DataFrame):
    """(title, rows) per dataset and architecture of the distilled rows."""
    distilled = df[df["training_set"] == "distilled"]
    for (dataset, arch), part in distilled.groupby(["dataset", "architecture"], sort=False):
        yield f"{dataset}, evaluated on {arch}", part


def _pivot(part: pd.DataFrame, keys: list[str], value) -> pd.DataFrame:
    cells = part.assign(_value=part.apply(value, axis=1))
    table = cells.pivot_table(index=keys, columns="ipc", values="_value", aggfunc=" / ".join, sort=False)
    table = table.reindex(sorted(table.columns), axis=1)
    return table.sort_index(key=lambda level: level.map(lambda v: (SOURCE_ORDER.get(v, len(SOURCE_ORDER)), str(v))))


def _table_md(table: pd.DataFrame, keys: list[str]) -> list[str]:
    headers = keys + [f"ipc {c}" for c in table.columns]
    rows = []
    for index, values in table.iterrows():
        index = index if isinstance(index, tuple) else (index,)
        rows.append([str(i) for i in index] + [v if isinstance(v, str) else "–" for v in values])
    return markdown_table(headers, rows)


def _none_gain(part: pd.DataFrame, keys: list[str], column: str):
    """Each cell minus the cell with no outliers and otherwise the same row keys and IPC (unpaired)."""
    others = [k for k in keys if k != "outliers.source"] + ["ipc"]
    plain = part[part["outliers.source"] == "none"].set_index(others)[column]

    def value(row):
        key = tuple(row[k] for k in others)
        key = key if len(others) > 1 else key[0]
        if row["outliers.source"] == "none" or key not in plain.index:
            return "–"
        return _pm(row[column] - plain.loc[key], signed=True)

    return value


def grid_tables(df: pd.DataFrame) -> list[str]:
    """The paper-shaped tables of the distilled sets, as markdown lines."""
    lines: list[str] = []
    for title, part in _groups(df):
        keys = row_keys(part)
        scores = scores_of(part)
        lines += [f"### {title}", ""]
        blocks = [("Accuracy (%) ↑", lambda r: _pm(r["accuracy"], r["accuracy_std"]))]
        for metric, label in METRIC_LABELS.items():
            for s in scores:
                blocks.append((f"{SCORE_LABELS.get(s, s)} {label}", lambda r, c=f"{s}_{metric}": _pm(r[c], r[f"{c}_std"])))
        if (part["outliers.source"] == "none").any() and (part["outliers.source"] != "none").any():
            for column, label in [("accuracy", "accuracy"), ("msp_auroc", "MSP AUROC"), ("msp_fpr95_in", "MSP FPR95 (InD+)")]:
                if column in part:
                    blocks.append((f"Gain over no outliers (same method and IPC): {label}", _none_gain(part, keys, column)))
        for base in BASELINE_LABELS:
            for column, label in [("accuracy", "accuracy"), ("msp_fpr95_in", "MSP FPR95 (InD+)")]:
                col = f"gain_{base}_{column}"
                if col in part and part[col].notna().any():
                    blocks.append((
                        f"Distilled minus {base} ({BASELINE_LABELS[base]}), paired over nets: {label}",
                        lambda r, c=col: _pm(r[c], r[f"{c}_std"], signed=True),
                    ))
        for heading, value in blocks:
            lines += [f"**{heading}**", ""] + _table_md(_pivot(part, keys, value), keys) + [""]
    return lines


def sets_table(df: pd.DataFrame) -> list[str]:
    """One experiment's training sets side by side (the README's headline), then its paired gains."""
    lines: list[str] = []
    for (name, arch), part in df.groupby(["experiment", "architecture"], sort=False):
        scores = scores_of(part)
        label = lambda s: SCORE_LABELS.get(s, s)  # noqa: E731
        headers = ["training set", "accuracy ↑", f"{label(scores[0])} AUROC ↑"] + [
            f"{label(s)} FPR95 (InD+) ↓" for s in scores
        ] + [f"{label(scores[0])} FPR95 (OOD+) ↓"]
        rows = []
        order = {s: i for i, s in enumerate(SETS)}
        for _, r in part.sort_values("training_set", key=lambda s: s.map(order)).iterrows():
            bold = r["training_set"] == "distilled"
            cols = ["accuracy", f"{scores[0]}_auroc"] + [f"{s}_fpr95_in" for s in scores] + [f"{scores[0]}_fpr95_out"]
            rows.append([f"**{r['training_set']}**" if bold else r["training_set"]]
                        + [_pm(r[c], r[f"{c}_std"], bold=bold) for c in cols])
        lines += markdown_table(headers, rows) + [""]
        distilled = part[part["training_set"] == "distilled"].iloc[0]
        gain_rows = []
        cols = ["accuracy", f"{scores[0]}_auroc"] + [f"{scores[0]}_fpr95_in", f"{scores[0]}_fpr95_out"] + [
            f"{s}_fpr95_in" for s in scores[1:]
        ]
        for base in BASELINE_LABELS:
            if f"gain_{base}_accuracy" in distilled and not pd.isna(distilled[f"gain_{base}_accuracy"]):
                gain_rows.append([f"distilled − {base}"] + [
                    _pm(distilled[f"gain_{base}_{c}"], distilled[f"gain_{base}_{c}_std"], signed=True) for c in cols
                ])
        if gain_rows:
            names = {"accuracy": "accuracy", f"{scores[0]}_auroc": f"{label(scores[0])} AUROC"}
            heads = [""] + [names.get(c) or f"{label(c.rsplit('_fpr95', 1)[0])} FPR95 ({'InD+' if c.endswith('in') else 'OOD+'})"
                            for c in cols]
            lines += ["Paired gains (mean ± std over nets of the per-net difference; net i of every set shares its seed):", ""]
            lines += markdown_table(heads, gain_rows) + [""]
    return lines


def provenance(df: pd.DataFrame, experiments: list[exp_show.Experiment], command: str) -> list[str]:
    """Which commit and which params produced the tables: each experiment's params that differ from its
    commit's params.yaml."""
    if set(df["kind"]) == {"workspace"}:
        where = [e.platform for e in experiments if e.platform]
        measured = f" Measured on {where[0]} (`{PLATFORM_PATH}`)." if where else ""
        return [f"Made by `{command}` from `metrics/metrics.json` and `params.yaml` as this commit holds them.{measured}", ""]
    commits = {e.rev: flatten(e.params) for e in experiments if e.kind == "commit"}
    lines = [f"Made by `{command}`; every number below is read from the experiments' `metrics/metrics.json`.", ""]
    rows = []
    for (name, short), part in df.groupby(["experiment", "baseline"], sort=True):
        first = part.iloc[0]
        exp = next(e for e in experiments if e.name == name and e.short == short)
        base = commits.get(exp.baseline)
        if exp.kind == "workspace":
            changed = "the committed params.yaml"
        elif base is None:
            changed = "(its commit's params are not in this data)"
        else:
            flat = flatten(exp.params)
            diff = {k: v for k, v in flat.items() if base.get(k) != v}
            changed = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in diff.items()) or "none (the commit's own params)"
        skipped = f"; skipped OOD sets: {first['skipped_ood_sets']}" if first["skipped_ood_sets"] else ""
        rows.append([name, first["baseline"], changed + skipped])
    lines += markdown_table(["experiment", "commit", "params changed from that commit's params.yaml"], rows) + [""]
    return lines


def scatter(df: pd.DataFrame, path: Path, score: str = "msp") -> None:
    """Accuracy against AUROC of every distilled set, one point per experiment, labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = df[df["training_set"] == "distilled"]
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    markers = dict(zip(sorted(part["outliers.source"].astype(str).unique()), "osD^v<>"))
    for source, group in part.groupby(part["outliers.source"].astype(str)):
        ax.errorbar(group["accuracy"], group[f"{score}_auroc"], xerr=group["accuracy_std"],
                    yerr=group[f"{score}_auroc_std"], fmt=markers[source], label=f"outliers: {source}", capsize=2)
        for _, r in group.iterrows():
            ax.annotate(f"{r['experiment']} ({r['architecture']})", (r["accuracy"], r[f"{score}_auroc"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("InD test accuracy (%)")
    ax.set_ylabel(f"{SCORE_LABELS.get(score, score)} AUROC, mean over OOD sets (%)")
    ax.set_title("Distilled sets: accuracy against OOD detection")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


# The side-by-side comparison's metric columns: (column of frame(), header), each as mean +- std.
COMPARE_METRICS = (("accuracy", "acc"), ("msp_auroc", "MSP AUROC"), ("msp_fpr95_in", "MSP FPR95"),
                   ("gain_init_accuracy", "acc - init"))


def _short_names(columns: list[str]) -> dict[str, str]:
    """Each dotted param's shortest trailing part that no other column shares (``distill.mtt.iterations``
    -> ``iterations``), so the headers stay narrow."""
    out = {}
    for c in columns:
        parts = c.split(".")
        for k in range(1, len(parts) + 1):
            tail = ".".join(parts[-k:])
            if not any(o != c and (o == tail or o.endswith("." + tail)) for o in columns):
                break
        out[c] = tail
    return out


def compare_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment (its distilled set; one per architecture when there are several): its name,
    the params that differ between the rows, and the headline metrics as ``mean +- std``."""
    d = df[df["training_set"] == "distilled"].reset_index(drop=True)
    changed = [c for c in params_columns(d) if d[c].astype(str).nunique() > 1]
    names = _short_names(changed)
    out = pd.DataFrame({"experiment": d["experiment"]})
    if d["architecture"].nunique() > 1:
        out["arch"] = d["architecture"]
    for c in changed:
        out[names[c]] = d[c].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    for column, header in COMPARE_METRICS:
        if column in d:
            std = d.get(f"{column}_std", pd.Series([None] * len(d)))
            out[header] = [_pm(m, s, signed=column.startswith("gain_")) for m, s in zip(d[column], std)]
    return out


def compare_text(table: pd.DataFrame, width: int) -> str:
    """The comparison as aligned text within ``width`` columns: when it is wider, param columns are left
    out from the right (their names listed below it; ``--csv`` and ``--md`` keep them all)."""
    fixed = [c for c in table.columns if c == "experiment" or c == "arch" or c in dict(COMPARE_METRICS).values()]
    params = [c for c in table.columns if c not in fixed]
    shown = list(params)
    while True:
        cols = [c for c in table.columns if c in fixed or c in shown]
        text = table[cols].to_string(index=False)
        if max(map(len, text.splitlines())) <= width or not shown:
            break
        shown.pop()
    left_out = [c for c in params if c not in shown]
    note = f"\n(not shown, to fit {width} columns: {', '.join(left_out)}; --csv or --md for every column)" if left_out else ""
    return text + note + "\n"


def workspace(root: Path | str = ".") -> list[exp_show.Experiment]:
    """The working tree's own params.yaml and metrics/metrics.json as one experiment (no DVC)."""
    root = Path(root)
    metrics_path, platform = root / exp_show.METRICS_FILE, root / PLATFORM_PATH
    if not metrics_path.exists():
        raise ResultsError(f"{metrics_path} not found: run the pipeline first (`dvc repro`)")
    return [exp_show.Experiment(
        name="workspace", rev="workspace", baseline="workspace", kind="workspace", state="success",
        params=yaml.safe_load((root / exp_show.PARAMS_FILE).read_text()) or {},
        metrics=json.loads(metrics_path.read_text()),
        platform=Platform.from_dict(json.loads(platform.read_text())).summary() if platform.exists() else None,
    )]


def markdown(df: pd.DataFrame, experiments: list[exp_show.Experiment], command: str) -> str:
    lines = provenance(df, experiments, command)
    if df["experiment"].nunique() == 1:
        lines += sets_table(df)
    else:
        lines += grid_tables(df)
    return "\n".join(lines).rstrip() + "\n"


def update(path: Path, text: str) -> None:
    """Replace what lies between ``<!-- trustdd.experiments.results:begin ... -->`` and ``<!-- trustdd.experiments.results:end -->``."""
    source = path.read_text()
    start, end = source.find(BEGIN), source.find(END)
    if start < 0 or end < start:
        raise ResultsError(f"{path}: no `{BEGIN} ... -->` ... `{END}` block to fill")
    start = source.index("-->", start) + 3
    path.write_text(source[:start] + "\n" + text + source[end:])


def block(path: Path) -> str:
    """The text of a file's results block (what ``update`` wrote)."""
    source = path.read_text()
    start = source.index("-->", source.index(BEGIN)) + 3
    return source[start: source.index(END)].lstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trustdd.experiments.results", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--from", dest="saved", nargs="+", metavar="PATH", help="saved dvc exp show --json (files or folders)")
    source.add_argument("--workspace", action="store_true", help="this folder's params.yaml and metrics/ (no DVC)")
    source.add_argument("--all-commits", "-A", action="store_true", help="dvc exp show -A: every commit")
    source.add_argument("--rev", nargs="+", help="dvc exp show --rev REV ...")
    parser.add_argument("--grid", help="keep the experiments of this grid (named GRID-*)")
    parser.add_argument("--exp", nargs="+", help="keep these experiments (or commits, by branch name or short rev)")
    parser.add_argument("--out", type=Path, help="write table.md, rows.csv and scatter.png here")
    parser.add_argument("--save", type=Path, help="also save the dvc exp show JSON read, to rebuild the tables with --from")
    parser.add_argument("--update", type=Path, help="replace the results block of this markdown file")
    view = parser.add_mutually_exclusive_group()
    view.add_argument("--compare", action="store_true",
                      help="experiments side by side in the terminal: the params that differ, the headline metrics")
    view.add_argument("--csv", action="store_true", help="the side-by-side comparison as CSV")
    view.add_argument("--md", action="store_true", help="the side-by-side comparison as a markdown table")
    parser.add_argument("--width", type=int, help="columns for --compare (default: the terminal's)")
    args = parser.parse_args(argv)
    command = "python -m trustdd.experiments.results " + shlex.join(argv if argv is not None else sys.argv[1:])
    try:
        if args.workspace:
            entries = None
            experiments = workspace()
        else:
            if args.saved:
                entries = exp_show.read_saved(args.saved)
            else:
                extra = ["-A"] if args.all_commits else [a for r in args.rev or [] for a in ("--rev", r)]
                entries = exp_show.run(extra)
            experiments = exp_show.parse(entries)
        if entries is not None:  # DVC's workspace row repeats HEAD's metrics (--workspace reads it on its own)
            experiments = [e for e in experiments if e.kind != "workspace"]
        df = select(frame(experiments), args.grid, args.exp)
        if df.empty:
            wanted = f" of grid {args.grid!r}" if args.grid else (f" named {', '.join(args.exp)}" if args.exp else "")
            raise ResultsError(f"no finished experiment{wanted} with metrics found (`dvc exp show` lists them)")
        if args.compare or args.csv or args.md:
            table = compare_frame(df)
            if args.csv:
                print(table.to_csv(index=False), end="")
            elif args.md:
                print("\n".join(markdown_table(list(table.columns), table.values.tolist())))
            else:
                print(compare_text(table, args.width or shutil.get_terminal_size().columns), end="")
            return 0
        text = markdown(df, experiments, command)
        if args.save and entries is not None:
            args.save.parent.mkdir(parents=True, exist_ok=True)
            args.save.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "table.md").write_text(text)
            df.to_csv(args.out / "rows.csv", index=False)
            scatter(df, args.out / "scatter.png")
        if args.update:
            update(args.update, text)
        if not (args.out or args.update):
            print(text, end="")
        return 0
    except (ResultsError, exp_show.ExpShowError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
