"""docs/extending.md is true: a toy corruption, score and method, added to a copy of the project by
editing exactly the files the page's table names, pass the params check and run through the code the
stages run (the corruption makes a pool, the score is fitted with labels and scores a probe, the method
distills a set that is written and read back as the distill and evaluate stages do)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
COPIED = ["trustdd", "stages", "dvc.yaml", "params.yaml"]

CORRUPTION = '''

@CORRUPTIONS.register("toy_dim")
@dataclass(frozen=True)
class ToyDim(Corruption):
    """Darken the images: x * factor."""

    factor: float = 0.5

    def check(self, shape=None, **context) -> None:
        if not 0 < self.factor < 1:
            raise _invalid("toy_dim", "factor", self.factor, "a number in (0, 1)")

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return x * self.factor
'''

SCORE = '''

@SCORES.register("toy_class_mean")
@dataclass
class ToyClassMean(Score):
    """Minus the distance from the features to the nearest class mean of the training features."""

    means: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def fit(self, net, train: Probe, labels: torch.Tensor) -> None:
        self.means = torch.stack([train.features[labels == c].mean(0) for c in labels.unique()])

    def __call__(self, probe: Probe) -> torch.Tensor:
        return -torch.cdist(probe.features, self.means).min(dim=1).values
'''

METHOD = '''"""A toy method: no distillation, ipc random real images per class."""

from dataclasses import dataclass

from trustdd.distill.base import METHODS, DistillTask, Method, initial_sets
from trustdd.distill.distilled import DistilledSet, StartingSets
from trustdd.runtime import generator


@METHODS.register("toy_random")
@dataclass(frozen=True)
class ToyRandom(Method):
    lr: float = 0.01

    def check(self, ipc=None, experts_epochs=None, norm=None, **context) -> None:
        if not self.lr > 0:
            raise ValueError(f"distill.toy_random.lr: invalid value {self.lr!r}; expected a number > 0")

    def run(self, task: DistillTask) -> DistilledSet:
        self.check(ipc=task.ipc)
        x_in, y_in, x_out = initial_sets(task, generator(task.seed, "distill", "toy_random"))
        return DistilledSet(x_in, y_in, x_out, self.lr, "toy_random", StartingSets.of(x_in, y_in, x_out, self.lr))
'''

# Run in the copy: the params check with every toy chosen, then each toy through the stages' code.
SCRIPT = '''
import torch
from trustdd.data.images import InputTransform
from trustdd.distill.base import DistillTask
from trustdd.distill.distilled import DistilledFile
from trustdd.evaluation.scores import Probe
from trustdd.nn.networks import NetSpec
from trustdd.outliers.sources import PoolRequest, build_pool
from trustdd.params import load_params

p = load_params()
assert p.method == "toy_random" and p.method_config().lr == 0.02
g = torch.Generator().manual_seed(0)
train_x = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8, generator=g)
train_y = torch.arange(40) % 10
pool = build_pool("poe", PoolRequest(train_x, ("toy_dim",), p.outliers.options, 8, g))
source = train_x.float() / 255.0
assert pool.kinds == ("toy_dim",) and len(pool) == 8
assert pool.x.float().max() <= 255 * 0.3 + 1  # darkened with the factor from params.yaml

spec = NetSpec("convnet", 1, 28, 10, width=8, depth=2)
net = spec.build()
score = p.evaluate.build_scores()["toy_class_mean"]
score.fit(net, Probe(net, train_x.float() / 255.0, (1.0,)), train_y)
assert score.means.shape[0] == 10
values = score(Probe(net, torch.rand(5, 1, 28, 28), (1.0,)))
assert values.shape == (5,) and bool((values <= 0).all())

task = DistillTask(source, train_y, pool.x.float() / 255.0, pool.kind, 1, 10, 2, spec, 0.5, 0, torch.device("cpu"))
result = p.method_config().run(task)
assert result.x_in.shape == (20, 1, 28, 28) and result.x_out.shape == (20, 1, 28, 28) and result.lr == 0.02
DistilledFile.of(result, "fashion_mnist", InputTransform((0.5,), (0.5,))).save("out")
back = DistilledFile.load("out/distilled.pt")
assert back.method == "toy_random" and torch.equal(back.x_in, result.x_in) and back.init["lr"] == 0.02
print("ok")
'''


def documented_files(kind: str, name: str) -> set[str]:
    """The files docs/extending.md's table says an extension of ``kind`` edits."""
    for line in (PROJECT / "docs/extending.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0] == kind:
            return {f.replace("NAME", name) for f in re.findall(r"`([^`]+)`", cells[1])}
    raise AssertionError(f"docs/extending.md has no row for {kind!r}")


def changed_files(copy: Path) -> set[str]:
    """Files of the copy that differ from the project, or are new."""
    changed = set()
    for path in copy.rglob("*"):
        rel = path.relative_to(copy)
        if path.is_file() and "__pycache__" not in rel.parts and rel.parts[0] != "out":
            original = PROJECT / rel
            if not original.exists() or original.read_bytes() != path.read_bytes():
                changed.add(str(rel))
    return changed


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


@pytest.fixture
def copy(tmp_path):
    for name in COPIED:
        src = PROJECT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name,
                                                             **({"ignore": shutil.ignore_patterns("__pycache__")} if src.is_dir() else {}))
    return tmp_path


def run_in(copy: Path, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=copy, env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)


def test_a_corruption_a_score_and_a_method_touch_only_the_documented_files_and_run(copy):
    append(copy / "trustdd/outliers/corruptions.py", CORRUPTION)
    append(copy / "trustdd/evaluation/scores.py", SCORE)
    (copy / "trustdd/distill/toy_random.py").write_text(METHOD)
    methods = copy / "trustdd/distill/methods.py"
    append(methods, "from trustdd.distill import toy_random  # noqa: E402, F401\n")
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["method"] = "toy_random"
    params["distill"]["toy_random"] = {"lr": 0.02}
    params["outliers"]["corruptions"] = [*params["outliers"]["corruptions"], "toy_dim"]
    params["outliers"]["options"] = {"toy_dim": {"factor": 0.3}}
    params["evaluate"]["scores"] = [*params["evaluate"]["scores"], "toy_class_mean"]
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    expected = (documented_files("corruption", "toy_random") | documented_files("score", "toy_random")
                | documented_files("method", "toy_random"))
    assert changed_files(copy) == expected
    distill_deps = yaml.safe_load((copy / "dvc.yaml").read_text())["stages"]["distill"]["deps"]
    assert "trustdd/distill" in distill_deps  # the new method's file reruns distill with no dvc.yaml edit

    proc = run_in(copy, SCRIPT)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


@pytest.mark.parametrize(
    "section, value, message",
    [
        ("outliers.options", {"toy_dim": {"factor": 2}}, "params: outliers.options.toy_dim.factor: invalid value 2.0; expected a number in (0, 1)"),
        ("distill.toy_random", {"lr": -1}, "params: distill.toy_random.lr: invalid value -1.0; expected a number > 0"),
        ("distill.toy_random", {"rate": 1}, "params: unknown key(s) distill.toy_random.rate; valid keys: lr"),
    ],
)
def test_a_toy_plugins_bad_option_is_refused_by_the_params_check_naming_the_key(copy, section, value, message):
    append(copy / "trustdd/outliers/corruptions.py", CORRUPTION)
    (copy / "trustdd/distill/toy_random.py").write_text(METHOD)
    append(copy / "trustdd/distill/methods.py", "from trustdd.distill import toy_random  # noqa: E402, F401\n")
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["method"] = "toy_random"
    params["outliers"]["corruptions"] = [*params["outliers"]["corruptions"], "toy_dim"]
    head, key = section.split(".")
    params[head][key] = value
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([sys.executable, "stages/check_params.py"], cwd=copy,
                          env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
