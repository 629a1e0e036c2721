"""docs/extending.md is true: its corruption, score and method (the page's own code blocks), added to a
copy of the project by editing exactly the files the page's table names, pass the params check and run through the code the
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

DOC = (PROJECT / "docs/extending.md").read_text()


def code_block(heading: str) -> str:
    """The python code block of docs/extending.md's section ``heading``: the code this test adds."""
    section = DOC.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return "\n\n" + re.search(r"```python\n(.*?)```", section, re.S).group(1)


CORRUPTION = code_block("A corruption (Pseudo-Outlier Exposure)")  # registers "dim"
SCORE = code_block("An OOD score")  # registers "class_mean"
METHOD = code_block("A distillation method").lstrip()  # registers "random_real", in a new file
REGISTERS = "from trustdd.distill import random_real  # noqa: F401\n"

# Run in the copy: the params check with every toy chosen, then each toy through the stages' code.
SCRIPT = '''
import torch
from trustdd.data.images import InputTransform
from trustdd.distill.base import DistillTask
from trustdd.distill.distilled import DistilledFile
from trustdd.evaluation.scores import Probe
from trustdd.evaluation.training_sets import load_distilled
from trustdd.nn.networks import NetSpec
from trustdd.outliers.sources import PoolRequest, build_pool
from trustdd.params import load_params

p = load_params()
assert p.method == "random_real" and p.method_config().lr == 0.02
g = torch.Generator().manual_seed(0)
train_x = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8, generator=g)
train_y = torch.arange(40) % 10
pool = build_pool("poe", PoolRequest(train_x, ("dim",), p.outliers.options, 8, g))
source = train_x.float() / 255.0
assert pool.kinds == ("dim",) and len(pool) == 8
assert pool.x.float().max() <= 255 * 0.3 + 1  # darkened with the factor from params.yaml

spec = NetSpec("convnet", 1, 28, 10, width=8, depth=2)
net = spec.build()
score = p.evaluate.build_scores()["class_mean"]
score.fit(net, Probe(net, train_x.float() / 255.0, (1.0,)), train_y)
assert score.means.shape[0] == 10
values = score(Probe(net, torch.rand(5, 1, 28, 28), (1.0,)))
assert values.shape == (5,) and bool((values <= 0).all())

task = DistillTask(source, train_y, pool.x.float() / 255.0, pool.kind, 1, 10, 2, spec, 0.5, 0, torch.device("cpu"))
result = p.method_config().run(task)
assert result.x_in.shape == (20, 1, 28, 28) and result.x_out.shape == (20, 1, 28, 28) and result.lr == 0.02
DistilledFile.of(result, "fashion_mnist", InputTransform((0.5,), (0.5,))).save("out")
back = load_distilled("out/distilled.pt", None, (1, 28, 28), 10)  # as the evaluate stage reads it
assert back.method == "random_real" and torch.equal(back.set.x_in, result.x_in) and back.init.lr == 0.02
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


def register_method(copy: Path) -> None:
    """The one line docs/extending.md adds among trustdd/distill/methods.py's imports."""
    methods = copy / "trustdd/distill/methods.py"
    text = methods.read_text()
    at = text.index("\n__all__")
    methods.write_text(text[:at] + REGISTERS + text[at:])


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
    (copy / "trustdd/distill/random_real.py").write_text(METHOD)
    register_method(copy)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["method"] = "random_real"
    params["distill"]["random_real"] = {"lr": 0.02}
    params["outliers"]["corruptions"] = [*params["outliers"]["corruptions"], "dim"]
    params["outliers"]["options"] = {"dim": {"factor": 0.3}}
    params["evaluate"]["scores"] = [*params["evaluate"]["scores"], "class_mean"]
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    expected = (documented_files("corruption", "random_real") | documented_files("score", "random_real")
                | documented_files("method", "random_real"))
    assert changed_files(copy) == expected
    distill_deps = yaml.safe_load((copy / "dvc.yaml").read_text())["stages"]["distill"]["deps"]
    assert "trustdd/distill" in distill_deps  # the new method's file reruns distill with no dvc.yaml edit

    proc = run_in(copy, SCRIPT)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


@pytest.mark.parametrize(
    "section, value, message",
    [
        ("outliers.options", {"dim": {"factor": 2}}, "params: outliers.options.dim.factor: invalid value 2.0; expected a number in (0, 1)"),
        ("distill.random_real", {"lr": -1}, "params: distill.random_real.lr: invalid value -1.0; expected a number > 0"),
        ("distill.random_real", {"rate": 1}, "params: unknown key(s) distill.random_real.rate; valid keys: lr"),
    ],
)
def test_a_toy_plugins_bad_option_is_refused_by_the_params_check_naming_the_key(copy, section, value, message):
    append(copy / "trustdd/outliers/corruptions.py", CORRUPTION)
    (copy / "trustdd/distill/random_real.py").write_text(METHOD)
    register_method(copy)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["method"] = "random_real"
    params["outliers"]["corruptions"] = [*params["outliers"]["corruptions"], "dim"]
    head, key = section.split(".")
    params[head][key] = value
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "stages.check_params"], cwd=copy,
                          env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
