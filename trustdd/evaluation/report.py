"""Turn an :class:`~trustdd.evaluation.protocol.Evaluation` into what the evaluate stage writes: the headline
metrics (``metrics.json``, what ``dvc metrics diff`` and ``dvc exp show`` compare), the full per-set detail
(``ood.json``), a markdown table for people (``report.md``) and the rows behind the DVC plots."""

from __future__ import annotations

import math

from trustdd.evaluation.metrics import CONVENTIONS, METRIC_NAMES, mean_std
from trustdd.evaluation.protocol import Evaluation

CLASSIFICATION = ("accuracy", "ece", "misclassification_auroc")
# The OOD metrics of the headline and of the gains; the AUPRs are in ood.json.
HEADLINE_METRICS = ("auroc", "fpr95_in", "fpr95_out")
# The baselines the distilled set is compared with, and how the report names them.
BASELINES = {"init": "the set the distillation started from", "random": "a random subset of the same size"}
LABELS = {
    "auroc": "AUROC",
    "aupr_in": "AUPR-In",
    "aupr_out": "AUPR-Out",
    "fpr95_in": "FPR95 (InD+)",
    "fpr95_out": "FPR95 (OOD+)",
}


def rounded(obj, digits: int = 4):
    """Round floats for JSON; NaN (an undefined metric) becomes null."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else round(obj, digits)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rounded(v, digits) for v in obj]
    return obj


def headline(ev: Evaluation, skipped_ood_sets: dict | None = None) -> dict:
    """What ``dvc exp show`` and ``dvc metrics diff`` compare, kept to a few columns: per training set and
    architecture, the accuracy and, per score, ``HEADLINE_METRICS`` averaged over all OOD sets (mean and std
    over nets); then distilled minus each baseline, paired by net seed. ECE, the AUPRs and every OOD set and
    group are in ``ood.json``. ``skipped_ood_sets`` (optional sets whose files were missing) is named, as one
    string, only when there are any: the averages of such a run cover fewer sets."""
    out: dict = {}
    for set_name, archs in ev.results.items():
        out[set_name] = {}
        for arch, r in archs.items():
            row = {"accuracy": r["accuracy"]}
            row.update({score: {m: groups["all"][m] for m in HEADLINE_METRICS} for score, groups in r["ood"].items()})
            out[set_name][arch] = row
    for base in BASELINES:
        if gain := gains(ev, base):
            out[f"distilled_minus_{base}"] = gain
    if skipped_ood_sets:
        out["skipped_ood_sets"] = ",".join(sorted(skipped_ood_sets))
    return rounded(out)


def gains(ev: Evaluation, base: str = "random") -> dict:
    """Distilled minus the ``base`` training set, per architecture: accuracy and, per score, the all-sets
    means of ``HEADLINE_METRICS``. Net i of both sets shares its seed, so each gain is the mean and std over nets
    of the per-net difference (the paired spread). Empty when the run has no such set."""
    if "distilled" not in ev.per_net or base not in ev.per_net:
        return {}
    out = {}
    for arch, nets in ev.per_net["distilled"].items():
        if arch not in ev.per_net[base]:
            continue
        pairs = list(zip(nets, ev.per_net[base][arch]))
        diff = {"accuracy": mean_std([a["accuracy"] - b["accuracy"] for a, b in pairs])}
        for score in nets[0]:
            if score != "accuracy":
                diff[score] = {m: mean_std([a[score][m] - b[score][m] for a, b in pairs]) for m in HEADLINE_METRICS}
        out[arch] = diff
    return out


def detail(ev: Evaluation, groups: dict[str, str], about: dict) -> dict:
    """Everything: every OOD set and group, every metric, mean and std; the conventions; the set-up."""
    return rounded(
        {"about": about, "conventions": CONVENTIONS, "groups": groups, "nets": ev.nets, "results": ev.results}
    )


def _pm(ms: dict) -> str:
    if ms["mean"] is None or math.isnan(ms["mean"]):
        return "n/a"
    return f"{ms['mean']:.2f} ± {ms['std']:.2f}"


def _gain(ms: dict) -> str:
    return f"{ms['mean']:+.2f} ± {ms['std']:.2f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(ev: Evaluation, groups: dict[str, str], about: dict) -> str:
    """A short report: classification, OOD detection averaged over all sets, the gain over the random
    baseline, then per OOD set and group for every architecture the distilled set was trained on."""
    num_eval = about.get("num_eval", "?")
    lines = [
        "# trustdd evaluation",
        "",
        f"Set: `{about.get('set', '?')}` (method {about.get('method', '?')}). Every number is the mean ± std over "
        f"{num_eval} nets trained from scratch and scored once, after their last epoch.",
        "Higher score = more in-distribution. FPR95 (InD+): OOD accepted while 95% of InD is kept; "
        "FPR95 (OOD+): InD rejected while 95% of OOD is caught (OpenOOD's). All values in %.",
        "",
    ]
    skipped = about.get("skipped_ood_sets", {})
    if skipped:
        lines += ["**Skipped OOD sets** (optional, files missing; not in any average): "
                  + "; ".join(f"{name}: {why}" for name, why in skipped.items()), ""]
    lines += [
        "## Classification (InD test set)",
        "",
    ]
    rows = []
    for set_name, archs in ev.results.items():
        for arch, r in archs.items():
            nets = ev.nets[set_name][arch]
            rows.append(
                [set_name, arch, str(nets["images"]), str(nets["epochs"])] + [_pm(r[k]) for k in CLASSIFICATION]
            )
    lines += markdown_table(["training set", "network", "images", "epochs", "accuracy", "ECE", "misclassification AUROC"], rows)
    lines += ["", "## OOD detection, averaged over all OOD sets", ""]
    rows = []
    for set_name, archs in ev.results.items():
        for arch, r in archs.items():
            for score, g in r["ood"].items():
                rows.append([set_name, arch, score] + [_pm(g["all"][m]) for m in METRIC_NAMES])
    lines += markdown_table(["training set", "network", "score"] + [LABELS[m] for m in METRIC_NAMES], rows)
    for base, what in BASELINES.items():
        gain = gains(ev, base)
        if not gain:
            continue
        lines += ["", f"## Distilled minus {base}: {what} (net i of both sets shares its seed: mean ± std of the per-net difference)", ""]
        rows = [
            [arch, score, _gain(d["accuracy"])] + [_gain(d[score][m]) for m in HEADLINE_METRICS]
            for arch, d in gain.items()
            for score in d
            if score != "accuracy"
        ]
        lines += markdown_table(["network", "score", "accuracy"] + [LABELS[m] for m in HEADLINE_METRICS], rows)
    first = next(iter(ev.results))
    for arch, r in ev.results[first].items():
        lines += ["", f"## Per OOD set: {first} set, {arch}", ""]
        rows = []
        for score, g in r["ood"].items():
            for name, metrics in g.items():
                label = f"**{name}**" if name in ("all", "near", "far") else f"{name} ({groups.get(name, '-')})"
                rows.append([score, label] + [_pm(metrics[m]) for m in METRIC_NAMES])
        lines += markdown_table(["score", "OOD set (group)"] + [LABELS[m] for m in METRIC_NAMES], rows)
    return "\n".join(lines) + "\n"


def curve_rows(ev: Evaluation) -> list[dict]:
    """Training curves for the plots: one series per (training set, network, net)."""
    return [
        {
            "series": f"{r['set']} / {r['arch']} / net {r['net']}",
            "epoch": r["epoch"],
            "loss": round(r["loss"], 5),
            "train_acc": round(r["train_acc"], 3),
        }
        for r in ev.curves
    ]
