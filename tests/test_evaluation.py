"""Distilled-set loading, the baselines, the evaluation loop and its report, on tiny synthetic data."""

import dataclasses
import json

import pytest
import torch

from trustdd.data.images import InputTransform
from trustdd.evaluation import report
from trustdd.evaluation.protocol import EvalConfig, check, evaluate
from trustdd.evaluation.training_sets import DistilledSetError, TrainingSet, full_data, load_distilled, random_subset
from trustdd.nn.networks import NetSpec

SHAPE = (1, 8, 8)
PLAIN = InputTransform((0.5,), (0.25,))


def _set(n_per_class=2, classes=3, outliers=0, lr=0.02, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    return TrainingSet(
        "distilled", torch.randn(len(y), *SHAPE, generator=g), y, torch.randn(outliers, *SHAPE, generator=g), lr, "test"
    )


# ---------------------------------------------------------------------------------------------------
# loading a set from disk
# ---------------------------------------------------------------------------------------------------


def test_loads_the_projects_own_format_with_its_transform(tmp_path):
    s = _set(outliers=6)
    own = InputTransform((0.1,), (0.2,))
    torch.save(
        {"x_in": s.x_in, "y_in": s.y_in, "x_out": s.x_out, "lr": 0.03, "method": "mtt", **own.to_dict()},
        tmp_path / "d.pt",
    )
    loaded = load_distilled(tmp_path / "d.pt", PLAIN, SHAPE, 3)
    assert torch.equal(loaded.set.x_in, s.x_in) and loaded.set.x_out.shape == (6, *SHAPE)
    assert loaded.set.lr == 0.03 and loaded.method == "mtt"
    assert loaded.transform.mean == (0.1,) and loaded.transform.std == (0.2,)


def test_loads_the_starting_sets_saved_with_a_distilled_set(tmp_path):
    s, start = _set(outliers=6), _set(outliers=6, seed=3)
    torch.save(
        {
            "x_in": s.x_in, "y_in": s.y_in, "x_out": s.x_out, "lr": 0.03, "method": "mtt",
            "init": {"x_in": start.x_in, "y_in": start.y_in, "x_out": start.x_out, "lr": 0.01},
        },
        tmp_path / "d.pt",
    )
    loaded = load_distilled(tmp_path / "d.pt", PLAIN, SHAPE, 3)
    assert loaded.init is not None and loaded.init.name == "init" and loaded.init.lr == 0.01
    assert torch.equal(loaded.init.x_in, start.x_in) and torch.equal(loaded.init.x_out, start.x_out)
    assert loaded.set.lr == 0.03
    # a set made elsewhere has no starting point: no init baseline
    torch.save({"x_in": s.x_in, "y_in": s.y_in}, tmp_path / "e.pt")
    assert load_distilled(tmp_path / "e.pt", PLAIN, SHAPE, 3).init is None


@pytest.mark.parametrize("layout", ["folder_best", "folder_plain", "file_iteration"])
def test_loads_mtt_style_image_label_pairs(tmp_path, layout):
    s = _set()
    images, labels = {
        "folder_best": ("images_best.pt", "labels_best.pt"),
        "folder_plain": ("images.pt", "labels.pt"),
        "file_iteration": ("images_5000.pt", "labels_5000.pt"),
    }[layout]
    torch.save(s.x_in, tmp_path / images)
    torch.save(s.y_in, tmp_path / labels)
    target = tmp_path / images if layout == "file_iteration" else tmp_path
    loaded = load_distilled(target, PLAIN, SHAPE, 3)
    assert torch.equal(loaded.set.x_in, s.x_in) and torch.equal(loaded.set.y_in, s.y_in)
    assert loaded.set.lr is None and loaded.set.x_out.shape == (0, *SHAPE)
    assert loaded.transform is PLAIN and loaded.method == "external"


def test_uint8_images_go_through_the_transform_and_soft_labels_become_hard(tmp_path):
    torch.save(torch.full((2, *SHAPE), 255, dtype=torch.uint8), tmp_path / "images.pt")
    torch.save(torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]]), tmp_path / "labels.pt")
    loaded = load_distilled(tmp_path, PLAIN, SHAPE, 3)
    assert torch.allclose(loaded.set.x_in, torch.full((2, *SHAPE), 2.0))  # (1 - 0.5) / 0.25
    assert loaded.set.y_in.tolist() == [1, 0]


def _truncate(path):
    path.write_bytes(path.read_bytes()[:5000])
    return path


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda d: d / "nope.pt", r"evaluate.set: .*nope.pt' does not exist; expected the project's distilled.pt"),
        (
            lambda d: (d / "images_7.pt").touch() or d,
            r"no images_best.pt or images.pt in .* \(found images_7.pt: point",
        ),
        (
            lambda d: torch.save(torch.zeros(2, *SHAPE), d / "images.pt") or d / "images.pt",
            r"has no labels file beside it; expected .*labels.pt",
        ),
        (lambda d: torch.save([1, 2], d / "other.pt") or d / "other.pt", r"is not a trustdd distilled set"),
        (
            lambda d: torch.save({"x_in": torch.zeros(2, *SHAPE), "y_in": torch.zeros(2).long(), "init": {"y_in": torch.zeros(2).long()}},
                                 d / "part.pt") or d / "part.pt",
            r"part.pt' is not a complete trustdd distilled set \(KeyError: 'x_in'\); expected the fields of .*DistilledFile",
        ),
        (
            lambda d: torch.save({"x_in": torch.zeros(600, *SHAPE)}, d / "cut.pt") or _truncate(d / "cut.pt"),
            r"evaluate.set: .*cut.pt cannot be read \(.*\); it is damaged or truncated: replace it with a complete copy",
        ),
    ],
)
def test_unreadable_sets_are_clear_errors(tmp_path, make, pattern):
    with pytest.raises(DistilledSetError, match=pattern):
        load_distilled(make(tmp_path), PLAIN, SHAPE, 3)


def test_shape_and_label_range_are_checked(tmp_path):
    torch.save(torch.zeros(2, 3, 32, 32), tmp_path / "images.pt")
    torch.save(torch.tensor([0, 1]), tmp_path / "labels.pt")
    with pytest.raises(DistilledSetError, match=r"have shape \(2, 3, 32, 32\); expected N x 1 x 8 x 8"):
        load_distilled(tmp_path, PLAIN, SHAPE, 3)
    torch.save(torch.zeros(2, *SHAPE), tmp_path / "images.pt")
    torch.save(torch.tensor([0, 7]), tmp_path / "labels.pt")
    with pytest.raises(DistilledSetError, match=r"labels .* run from 0 to 7; the dataset has classes 0..2"):
        load_distilled(tmp_path, PLAIN, SHAPE, 3)


@pytest.mark.parametrize("lr", [-27.10361099243164, 0.0, float("nan"), float("inf")])
def test_a_set_whose_learned_lr_is_not_a_positive_number_is_refused_naming_the_set(tmp_path, lr):
    s = _set(outliers=6)
    torch.save({"x_in": s.x_in, "y_in": s.y_in, "x_out": s.x_out, "lr": lr, "method": "mtt"}, tmp_path / "d.pt")
    with pytest.raises(DistilledSetError, match=rf"evaluate.set: {tmp_path / 'd.pt'} carries the learned lr {lr!r}; "
                       r"expected a finite number > 0 \(its distillation diverged"):
        load_distilled(tmp_path / "d.pt", PLAIN, SHAPE, 3)


def test_a_set_with_non_finite_images_is_refused(tmp_path):
    x = torch.zeros(2, *SHAPE)
    x[1, 0, 3, 3] = float("nan")
    torch.save(x, tmp_path / "images.pt")
    torch.save(torch.tensor([0, 1]), tmp_path / "labels.pt")
    with pytest.raises(DistilledSetError, match=r"images in .*images.pt' hold non-finite values"):
        load_distilled(tmp_path, PLAIN, SHAPE, 3)


# ---------------------------------------------------------------------------------------------------
# baselines
# ---------------------------------------------------------------------------------------------------


def _real(n_per_class=10, classes=3, pool=20):
    train_y = torch.arange(classes).repeat(n_per_class)
    train_x = torch.arange(len(train_y), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, *SHAPE).contiguous()
    pool_x = (100 + torch.arange(pool, dtype=torch.uint8)).view(-1, 1, 1, 1).expand(-1, *SHAPE).contiguous()
    return train_x, train_y, pool_x


def test_random_subset_matches_the_set_per_class_and_is_deterministic():
    like = _set(n_per_class=2, classes=3, outliers=4)
    train_x, train_y, pool_x = _real()
    a = random_subset(like, train_x, train_y, pool_x, PLAIN, seed=0)
    b = random_subset(like, train_x, train_y, pool_x, PLAIN, seed=0)
    c = random_subset(like, train_x, train_y, pool_x, PLAIN, seed=1)
    assert a.name == "random" and a.per_class.tolist() == [2, 2, 2] and a.x_out.shape == (4, *SHAPE)
    assert torch.equal(a.x_in, b.x_in) and torch.equal(a.x_out, b.x_out)
    assert not torch.equal(a.x_in, c.x_in)
    # the images really are train images of the right class (pixel value = train index; class = index mod 3)
    index = (a.x_in[:, 0, 0, 0] * 0.25 + 0.5) * 255
    assert [round(float(i)) % 3 for i in index] == a.y_in.tolist()
    assert len(set(index.round().tolist())) == 6  # drawn without replacement


def test_random_subset_without_outliers_and_with_too_small_a_pool():
    train_x, train_y, pool_x = _real(pool=3)
    assert random_subset(_set(), train_x, train_y, pool_x, PLAIN, 0).x_out.shape[0] == 0
    with pytest.raises(ValueError, match="the outlier pool has 3 images; the set has 4 outliers"):
        random_subset(_set(outliers=4), train_x, train_y, pool_x, PLAIN, 0)


def test_full_data_uses_everything():
    train_x, train_y, pool_x = _real()
    with_out = full_data(_set(outliers=2), train_x, train_y, pool_x, PLAIN)
    assert with_out.x_in.shape[0] == 30 and with_out.x_out.shape[0] == 20
    assert full_data(_set(), train_x, train_y, pool_x, PLAIN).x_out.shape[0] == 0


def test_learned_lr_is_used_only_on_the_distillation_net():
    cfg = EvalConfig()
    assert cfg.lr_for(_set(lr=0.02), "convnet", "convnet") == 0.02
    assert cfg.lr_for(_set(lr=0.02), "vgg11", "convnet") == cfg.baseline_lr  # the lr was learned for convnet
    assert cfg.lr_for(dataclasses.replace(_set(lr=None), name="random"), "convnet", "convnet") == cfg.baseline_lr
    with pytest.raises(ValueError, match=r"evaluate.lr: 'learned', but test carries no learned lr; set evaluate.lr"):
        check([_set(lr=None)], cfg, "convnet")
    check([_set(lr=None)], dataclasses.replace(cfg, architectures=("mlp",)), "convnet")  # not needed there
    fixed = dataclasses.replace(cfg, lr=0.1)
    assert fixed.lr_for(_set(lr=None), "convnet", "convnet") == fixed.lr_for(_set(), "mlp", "convnet") == 0.1


# ---------------------------------------------------------------------------------------------------
# the evaluation loop
# ---------------------------------------------------------------------------------------------------

SPEC = NetSpec("convnet", channels=1, image_size=8, num_classes=3, width=4, depth=1)
CFG = EvalConfig(num_eval=2, epochs=2, batch_size=4, score_options={"knn": {"k": 2}})


def _run(sets, cfg=CFG, seed=0, workers=0):
    g = torch.Generator().manual_seed(5)
    test_x, test_y = torch.randn(12, *SHAPE, generator=g), torch.arange(3).repeat(4)
    ood = {"near_set": torch.randn(6, *SHAPE, generator=g) + 2, "far_set": torch.randn(5, *SHAPE, generator=g) * 3}
    return evaluate(
        sets,
        test_x,
        test_y,
        ood,
        {"near_set": "near", "far_set": "far"},
        SPEC,
        cfg,
        0.5,
        seed,
        torch.device("cpu"),
        (4.0,),
        workers,
    )


def test_evaluation_reports_every_set_score_and_group():
    distilled = _set(outliers=6)
    ev = _run([distilled])
    r = ev.results["distilled"]["convnet"]
    assert set(r) == {"accuracy", "ece", "misclassification_auroc", "ood"}
    assert set(r["ood"]) == {"msp", "max_logit", "energy", "odin", "knn"}
    assert set(r["ood"]["energy"]) == {"all", "near", "far", "near_set", "far_set"}
    assert set(r["ood"]["energy"]["all"]) == {"auroc", "aupr_in", "aupr_out", "fpr95_in", "fpr95_out"}
    auroc = r["ood"]["msp"]
    assert auroc["all"]["auroc"]["mean"] == pytest.approx(
        (auroc["near_set"]["auroc"]["mean"] + auroc["far_set"]["auroc"]["mean"]) / 2
    )
    assert len(ev.curves) == 2 * 2  # nets x epochs
    assert {row["score"] for row in ev.roc} == set(r["ood"]) and {row["ood_set"] for row in ev.roc} == {
        "near_set",
        "far_set",
    }
    assert {row["images"] for row in ev.histograms} == {"InD test", "near_set", "far_set"}
    for score in r["ood"]:  # each histogram is a distribution per image set
        for images in ["InD test", "near_set"]:
            total = sum(h["fraction"] for h in ev.histograms if h["score"] == score and h["images"] == images)
            assert total == pytest.approx(1.0, abs=1e-3)
    assert ev.nets["distilled"]["convnet"] == {"epochs": 2, "lr": 0.02, "images": 6}


def test_same_seed_same_numbers_and_nets_are_paired_across_sets():
    distilled = _set(outliers=6)
    twin = dataclasses.replace(distilled, name="random")  # the same images under another name
    ev = _run([distilled, twin], cfg=dataclasses.replace(CFG, baseline_lr=0.02))
    assert ev.results["distilled"] == ev.results["random"]  # net i of each set starts and trains alike
    again = _run([distilled])
    assert again.results["distilled"] == ev.results["distilled"]
    other = _run([distilled], seed=1)
    assert other.results["distilled"] != ev.results["distilled"]


def test_full_data_trains_for_its_own_epochs():
    full = dataclasses.replace(_set(n_per_class=4), name="full")
    ev = _run([_set(), full], cfg=dataclasses.replace(CFG, num_eval=1, full_data_epochs=3))
    assert ev.nets["full"]["convnet"] == {"epochs": 3, "lr": 0.01, "images": 12}
    assert sum(1 for c in ev.curves if c["set"] == "full") == 3


def test_report_headline_paired_gains_over_init_and_random_and_markdown():
    distilled = _set(outliers=6)
    init = dataclasses.replace(_set(outliers=6, seed=5), name="init")
    rand = dataclasses.replace(_set(outliers=6, seed=9), name="random", lr=None)
    ev = _run([distilled, init, rand], cfg=dataclasses.replace(CFG, num_eval=2, scores=("msp", "energy")))
    head = report.headline(ev)
    json.dumps(head, allow_nan=False)  # valid JSON: no NaN
    d = head["distilled"]["convnet"]
    for base in ("init", "random"):
        b = head[base]["convnet"]
        gain = head[f"distilled_minus_{base}"]["convnet"]
        assert gain["accuracy"]["mean"] == pytest.approx(d["accuracy"]["mean"] - b["accuracy"]["mean"], abs=1e-3)
        assert gain["msp"]["fpr95_in"]["mean"] == pytest.approx(
            d["msp"]["fpr95_in"]["mean"] - b["msp"]["fpr95_in"]["mean"], abs=1e-3
        )
        # the spread is that of the per-net (paired) difference, not a combination of the two stds
        diffs = [a["accuracy"] - o["accuracy"] for a, o in zip(ev.per_net["distilled"]["convnet"], ev.per_net[base]["convnet"])]
        assert gain["accuracy"]["std"] == pytest.approx(float(torch.tensor(diffs).std(unbiased=False)), abs=1e-3)
    # init trains at the set's own (starting) lr, random at baseline_lr
    assert ev.nets["init"]["convnet"]["lr"] == init.lr and ev.nets["random"]["convnet"]["lr"] == CFG.baseline_lr
    md = report.markdown(ev, {"near_set": "near", "far_set": "far"}, {"set": "x.pt", "method": "mtt", "num_eval": 2})
    assert "| training set | network | images | epochs | accuracy | ECE | misclassification AUROC |" in md
    assert "| distilled | convnet | 6 | 2 |" in md and "| init | convnet | 6 | 2 |" in md and "| random | convnet | 6 | 2 |" in md
    assert "## Distilled minus init" in md and "## Distilled minus random" in md and "| convnet | msp |" in md
    assert "near_set (near)" in md and "**far**" in md
    skipped = {"places365": "missing: data/raw/places365/val_256"}
    about = {"set": "x.pt", "method": "mtt", "num_eval": 2, "skipped_ood_sets": skipped}
    assert "**Skipped OOD sets** (optional, files missing; not in any average): places365: missing: data/raw/places365/val_256" in report.markdown(ev, {}, about)
    assert report.detail(ev, {}, about)["about"]["skipped_ood_sets"] == skipped
    assert "Skipped" not in md
    # the headline: accuracy and three OOD metrics per score (the rest is in ood.json); skipped sets named
    assert set(d) == {"accuracy", "msp", "energy"} and set(d["msp"]) == {"auroc", "fpr95_in", "fpr95_out"}
    assert d["msp"]["auroc"] == report.rounded(ev.results["distilled"]["convnet"]["ood"]["msp"]["all"]["auroc"])
    assert "skipped_ood_sets" not in head
    both = {"places365": "missing", "dtd": "missing"}
    assert report.headline(ev, both)["skipped_ood_sets"] == "dtd,places365"


def test_rounded_turns_nan_into_null():
    assert report.rounded({"a": float("nan"), "b": [1.234567]}) == {"a": None, "b": [1.2346]}


def test_worker_processes_give_the_same_bytes_for_any_number_of_them():
    sets = [_set(outliers=6), dataclasses.replace(_set(outliers=6, seed=9), name="random", lr=None)]
    cfg = dataclasses.replace(CFG, scores=("msp", "knn"))
    one = _run(sets, cfg=cfg, workers=1)
    two = _run(sets, cfg=cfg, workers=2)
    assert json.dumps(report.headline(one)) == json.dumps(report.headline(two))
    assert one.curves == two.curves and one.roc == two.roc and one.roc  # net 0's plot data comes back
    assert [c["set"] for c in one.curves][:: CFG.epochs] == ["distilled", "distilled", "random", "random"]
    # ... and equal, to float rounding, to training them in this process on torch's threads
    here = _run(sets, cfg=cfg, workers=0)
    assert [c["loss"] for c in here.curves] == pytest.approx([c["loss"] for c in one.curves], rel=1e-4)
    for key in ("distilled", "random"):
        assert here.per_net[key]["convnet"][0]["accuracy"] == pytest.approx(one.per_net[key]["convnet"][0]["accuracy"], abs=1e-6)


def test_soft_labels_round_trip_through_the_artefact_and_train(tmp_path):
    s, start = _set(outliers=6), _set(outliers=6, seed=3)
    soft = torch.softmax(torch.randn(6, 3, generator=torch.Generator().manual_seed(1)), 1)
    torch.save(
        {
            "x_in": s.x_in, "y_in": soft.argmax(1), "y_soft": soft, "x_out": s.x_out, "lr": 0.03, "method": "mtt",
            "init": {"x_in": start.x_in, "y_in": start.y_in, "x_out": start.x_out, "lr": 0.01, "y_soft": soft.flip(0)},
        },
        tmp_path / "d.pt",
    )
    loaded = load_distilled(tmp_path / "d.pt", PLAIN, SHAPE, 3)
    assert torch.equal(loaded.set.y_soft, soft) and torch.equal(loaded.set.targets, soft)
    assert torch.equal(loaded.init.y_soft, soft.flip(0))
    ev = _run([loaded.set], cfg=dataclasses.replace(CFG, num_eval=1, scores=("msp",)))
    assert ev.results["distilled"]["convnet"]["accuracy"]["mean"] >= 0 and len(ev.curves) == CFG.epochs
    # soft labels that are one-hot train exactly like the hard labels they encode
    hard = dataclasses.replace(loaded.set, y_soft=None)
    one_hot = dataclasses.replace(loaded.set, y_soft=torch.nn.functional.one_hot(loaded.set.y_in, 3).float())
    a = _run([hard], cfg=dataclasses.replace(CFG, num_eval=1, scores=("msp",)))
    b = _run([one_hot], cfg=dataclasses.replace(CFG, num_eval=1, scores=("msp",)))
    assert [c["loss"] for c in a.curves] == pytest.approx([c["loss"] for c in b.curves], rel=1e-5)
    # a soft-label matrix of the wrong width is refused, naming the key
    torch.save({"x_in": s.x_in, "y_in": s.y_in, "y_soft": torch.ones(6, 4) / 4}, tmp_path / "bad.pt")
    with pytest.raises(DistilledSetError, match="evaluate.set: soft labels"):
        load_distilled(tmp_path / "bad.pt", PLAIN, SHAPE, 3)
