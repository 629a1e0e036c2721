"""Stage 6: train fresh nets on the distilled set (and the baselines); accuracy, calibration and OOD metrics."""

from pathlib import Path

from trustdd import distributed
from trustdd.cli import run_stage
from trustdd.data.ood import OODSets
from trustdd.data.prepared import Prepared
from trustdd.evaluation import report
from trustdd.evaluation.protocol import evaluate
from trustdd.evaluation.training_sets import full_data, load_distilled, random_subset
from trustdd.outliers.pool import OutlierPool
from trustdd.params import load_params
from trustdd.platform import PATH as PLATFORM
from trustdd.platform import current as current_platform
from trustdd.runtime import configure_determinism, json_text, write_all

METRICS = Path("metrics/metrics.json")
DETAIL = Path("metrics/ood.json")
REPORT = Path("metrics/report.md")
CURVES = Path("metrics/eval_curves.json")
ROC = Path("metrics/plots/roc.json")
HISTOGRAMS = Path("metrics/plots/score_histograms.json")


def main() -> None:
    p = load_params()
    if distributed.relaunch(p.parallel.nproc):  # this script, on nproc processes
        return
    with distributed.join(p.parallel, p.device) as (group, device):
        configure_determinism(p.seed)
        evaluate_on(p, group, device)


def evaluate_on(p, group: distributed.Group, device) -> None:
    """Every rank trains its share of the nets; rank 0 writes the results."""
    prepared = Prepared.load()
    ood = OODSets.load()
    spec = p.net_spec()
    loaded = load_distilled(
        p.evaluate.set, prepared.transform, (spec.channels, spec.image_size, spec.image_size), spec.num_classes
    )
    to_inputs = loaded.transform  # test, OOD and baseline images go through the set's own transform
    sets = [loaded.set]
    if p.evaluate.init_baseline and loaded.init is not None:
        sets.append(loaded.init)
    if p.evaluate.random_baseline or p.evaluate.full_data_epochs:
        pool = OutlierPool.load().x
        if p.evaluate.random_baseline:
            sets.append(random_subset(loaded.set, prepared.train_x, prepared.train_y, pool, to_inputs, p.seed))
        if p.evaluate.full_data_epochs:
            sets.append(full_data(loaded.set, prepared.train_x, prepared.train_y, pool, to_inputs))
    ev = evaluate(
        sets,
        to_inputs(prepared.test_x),
        prepared.test_y,
        {name: to_inputs(x) for name, x in ood.images.items()},
        ood.groups,
        spec,
        p.evaluate,
        p.lambda_oe,
        p.seed,
        device,
        tuple(1.0 / s for s in to_inputs.std),  # input units per pixel unit (ODIN's step; approximate under ZCA)
        p.workers,
        group,
    )
    if ev is None:  # a rank other than 0
        return
    about = {"set": p.evaluate.set, "method": loaded.method, "num_eval": p.evaluate.num_eval}
    if ood.skipped:
        about["skipped_ood_sets"] = ood.skipped
    head = report.headline(ev, ood.skipped)
    # all or nothing: the previous results stay in place until every new file is complete (dvc.yaml: persist)
    write_all({
        METRICS: json_text(head),
        DETAIL: json_text(report.detail(ev, ood.groups, about)),
        REPORT: report.markdown(ev, ood.groups, about),
        CURVES: json_text({"train": report.curve_rows(ev)}),
        ROC: json_text({"roc": ev.roc}),
        HISTOGRAMS: json_text({"histogram": ev.histograms}),
        PLATFORM: json_text(current_platform(device).to_dict()),  # what these bytes hold on (make repro-check)
    })
    main_row, first = head["distilled"][p.evaluate.architectures[0]], p.evaluate.scores[0]
    print(
        f"accuracy {main_row['accuracy']['mean']:.2f} +- {main_row['accuracy']['std']:.2f}; {first} mean AUROC "
        f"{main_row[first]['auroc']['mean']:.2f}, FPR95 (InD+) {main_row[first]['fpr95_in']['mean']:.2f}; see {REPORT}"
    )


if __name__ == "__main__":
    run_stage(main)
