"""The platform record and the two levels of `make repro-check`: exact on the same platform, within a tolerance
derived from the nets' spread on another. The whole pipeline under a second kernel path: tests/test_pipeline.py."""

from __future__ import annotations

import io
import json
import math
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from scipy.stats import t as student_t

from trustdd.experiments import repro
from trustdd.platform import PATH, Platform, current


def test_the_platform_record_round_trips_through_json_and_names_what_differs():
    here = current()
    assert Platform.from_dict(json.loads(json.dumps(here.to_dict()))) == here
    assert here.torch == torch.__version__ and here.cpu_capability == torch.backends.cpu.get_cpu_capability()
    assert here.threads == torch.get_num_threads() and here.device == "cpu"
    other = replace(here, cpu_capability="AVX512", threads=here.threads + 1)
    assert other != here
    assert here.differences(other) == {"cpu_capability": (here.cpu_capability, "AVX512"),
                                       "threads": (here.threads, here.threads + 1)}
    assert f"ATen {here.cpu_capability}" in here.summary() and f"torch {torch.__version__}" in here.summary()


def test_a_pinned_kernel_path_is_part_of_the_platform(monkeypatch):
    monkeypatch.setenv("MKL_CBWR", "AVX2,STRICT")
    pinned = current()
    assert dict(pinned.kernel_env)["MKL_CBWR"] == "AVX2,STRICT" and "MKL_CBWR=AVX2,STRICT" in pinned.summary()
    monkeypatch.delenv("MKL_CBWR")
    assert current() != pinned


def test_a_malformed_platform_record_names_its_fields():
    d = current().to_dict()
    del d["torch"]
    with pytest.raises(ValueError, match=r"missing field\(s\) \['torch'\]"):
        Platform.from_dict(d)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['gpu'\]"):
        Platform.from_dict({**current().to_dict(), "gpu": "x"})


def metrics(acc: float = 80.0, fpr: float = 10.0, acc_std: float = 0.3, fpr_std: float = 2.0) -> dict:
    """A metrics.json of three training sets and one paired gain."""
    row = lambda a, f: {"convnet": {"accuracy": {"mean": a, "std": acc_std},  # noqa: E731
                                    "msp": {"fpr95_in": {"mean": f, "std": fpr_std}}}}
    return {"distilled": row(acc, fpr), "init": row(acc - 1, fpr + 5), "random": row(acc - 6, fpr + 7),
            "distilled_minus_init": {"convnet": {"accuracy": {"mean": 1.0, "std": 0.5},
                                                 "msp": {"fpr95_in": {"mean": -5.0, "std": 2.5}}}}}


def test_the_tolerance_is_the_bonferroni_t_quantile_times_the_standard_error_of_a_difference_of_means():
    n, alpha = 3, 0.01
    old, new = metrics(), metrics(acc=80.4, acc_std=0.5)
    rows, problems = repro.compare(old, new, n, alpha)
    assert problems == [] and len(rows) == 8
    by_name = {r.metric: r for r in rows}
    # accuracy: 3 unpaired sets x 2 runs pooled, population -> sample variance; 6 x (n - 1) = 12 degrees of freedom
    s = math.sqrt((3 * 0.3**2 + 3 * 0.5**2) / 6 * n / (n - 1))
    z = student_t.ppf(1 - alpha / (2 * 8), 12)
    assert by_name["distilled/convnet/accuracy"].tolerance == pytest.approx(z * s * math.sqrt(2 / n))
    assert by_name["init/convnet/accuracy"].tolerance == by_name["distilled/convnet/accuracy"].tolerance
    # a paired gain is pooled over the paired rows only (one here, two runs: 2 x (n - 1) = 4 degrees of freedom)
    z4 = student_t.ppf(1 - alpha / (2 * 8), 4)
    assert by_name["distilled_minus_init/convnet/accuracy"].tolerance == pytest.approx(z4 * 0.5 * math.sqrt(n / (n - 1)) * math.sqrt(2 / n))
    assert by_name["distilled/convnet/accuracy"].diff == pytest.approx(0.4) and all(r.ok for r in rows)


def test_a_shift_beyond_the_tolerance_fails_and_a_missing_mean_is_a_problem():
    rows, _ = repro.compare(metrics(), metrics(fpr=25.0), 3)
    failed = [r.metric for r in rows if not r.ok]
    assert failed == ["distilled/convnet/msp/fpr95_in", "init/convnet/msp/fpr95_in", "random/convnet/msp/fpr95_in"]
    new = metrics()
    del new["random"]["convnet"]["msp"]
    rows, problems = repro.compare(metrics(), new, 3)
    assert problems == ["random/convnet/msp/fpr95_in: in the committed metrics.json only"] and len(rows) == 7
    nan = metrics()
    nan["distilled"]["convnet"]["accuracy"]["mean"] = float("nan")
    assert not next(r for r in repro.compare(metrics(), nan, 3)[0] if r.metric == "distilled/convnet/accuracy").ok


def test_one_net_per_set_has_no_spread_to_derive_a_tolerance_from():
    with pytest.raises(repro.ReproError, match="evaluate.num_eval: 1 net per set has no spread"):
        repro.compare(metrics(), metrics(), 1)


LOCK = {"schema": "2.0", "stages": {
    "prepare": {"cmd": "python -m stages.prepare", "deps": [{"path": "stages/prepare.py", "md5": "aa", "size": 10}],
                "params": {"params.yaml": {"seed": 0}}, "outs": [{"path": "data/prepared", "md5": "11.dir", "size": 5, "nfiles": 1}]},
    "train": {"cmd": "python -m stages.train", "deps": [{"path": "data/prepared/ind.pt", "md5": "22", "size": 5},
                                                         {"path": "trustdd/nn.py", "md5": "bb", "size": 9}],
              "params": {"params.yaml": {"seed": 0}}, "outs": [{"path": "data/experts", "md5": "33.dir", "size": 7, "nfiles": 3}]},
}}


def edited(**changes) -> dict:
    lock = json.loads(json.dumps(LOCK))
    for dotted, value in changes.items():
        stage, key, index, field = dotted.split("__")
        lock["stages"][stage][key][int(index)][field] = value
    return lock


def test_the_lock_may_differ_only_in_computed_hashes():
    # another platform computes other outputs, and so other hashes of the deps that are outputs
    assert repro.lock_problems(LOCK, edited(train__outs__0__md5="44.dir", train__outs__0__size=8,
                                            train__deps__0__md5="55", prepare__outs__0__md5="66.dir")) == []
    assert repro.lock_problems(LOCK, edited(train__deps__1__md5="cc")) == ["stage train: its deps differ from the committed dvc.lock"]
    changed = json.loads(json.dumps(LOCK))
    changed["stages"]["prepare"]["params"]["params.yaml"]["seed"] = 1
    del changed["stages"]["train"]
    assert repro.lock_problems(LOCK, changed) == ["stage train: in the committed dvc.lock only",
                                                  "stage prepare: its params differ from the committed dvc.lock"]


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def committed(tmp_path) -> Path:
    """A repository holding results made on this platform."""
    (tmp_path / "metrics").mkdir()
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"evaluate": {"num_eval": 3}}))
    (tmp_path / "metrics/metrics.json").write_text(json.dumps(metrics()))
    (tmp_path / "metrics/report.md").write_text("# report\n")
    (tmp_path / PATH).write_text(json.dumps(current().to_dict()))
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "results")
    return tmp_path


def run_check(root: Path) -> tuple[bool, str]:
    out = io.StringIO()
    return repro.check("HEAD", root, out=out), out.getvalue()


def test_on_the_same_platform_the_check_is_exact_and_one_changed_byte_fails_it(committed):
    ok, text = run_check(committed)
    assert ok and "the same platform, so the check is exact" in text and "passed: byte-identical" in text
    report = committed / "metrics/report.md"
    report.write_bytes(report.read_bytes().replace(b"report", b"repors"))
    ok, text = run_check(committed)
    assert not ok and "  differs: metrics/report.md" in text and "FAILED: 1 file(s) differ from HEAD" in text
    report.write_text("# report\n")
    (committed / "metrics/extra.json").write_text("{}")  # a new result file the commit does not hold
    assert not run_check(committed)[0]


def test_on_another_platform_each_mean_is_compared_and_the_message_names_metric_values_and_tolerance(committed):
    other = replace(current(), cpu_capability="AVX512", cpu="GenuineIntel Xeon (6/143/8)")
    (committed / PATH).write_text(json.dumps(other.to_dict()))
    (committed / "metrics/metrics.json").write_text(json.dumps(metrics(acc=80.3, fpr=11.0)))
    (committed / "metrics/report.md").write_text("# another report\n")
    ok, text = run_check(committed)
    assert ok, text
    assert "another platform, so the check is statistical" in text
    assert f"platform differs in cpu_capability: {current().cpu_capability!r} (committed) -> 'AVX512' (this run)" in text
    rows = {r.metric: r for r in repro.compare(metrics(), metrics(acc=80.3, fpr=11.0), 3)[0]}
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("distilled/convnet/accuracy "))
    assert line.split()[1:] == ["80.0000", "80.3000", "+0.3000", f"{rows['distilled/convnet/accuracy'].tolerance:.4f}"]
    assert "passed: 8/8 means within tolerance" in text
    # a planted regression: the distilled set's nets accept far more OOD inputs
    (committed / "metrics/metrics.json").write_text(json.dumps(metrics(fpr=30.0)))
    ok, text = run_check(committed)
    assert not ok and "FAILED: 5/8 means within tolerance" in text
    assert next(ln for ln in text.splitlines() if "distilled/convnet/msp/fpr95_in" in ln).endswith("BEYOND")
    # other code, whatever its metrics: the lock's dependencies no longer match the commit's
    (committed / "metrics/metrics.json").write_text(json.dumps(metrics()))
    (committed / "dvc.lock").write_text(yaml.safe_dump(edited(train__deps__1__md5="cc")))
    ok, text = run_check(committed)
    assert not ok and "stage train: its deps differ from the committed dvc.lock" in text


def test_a_commit_without_a_platform_record_gets_the_statistical_check(committed):
    git(committed, "rm", "-q", PATH)
    git(committed, "commit", "-qm", "no record")
    (committed / PATH).write_text(json.dumps(current().to_dict()))
    ok, text = run_check(committed)
    assert ok and f"HEAD's platform: not recorded ({PATH} absent)" in text and "check is statistical" in text


def test_the_command_reports_a_missing_run_and_a_bad_rev_in_one_line(committed, monkeypatch, capsys):
    monkeypatch.chdir(committed)
    assert repro.main(["check", "--rev", "nosuchrev"]) == 2
    assert capsys.readouterr().err == "error: --rev: 'nosuchrev' is not a commit of this repository\n"
    (committed / PATH).unlink()
    assert repro.main(["check"]) == 2
    assert f"error: {PATH} does not exist: run the pipeline first" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        repro.main(["check", "--alpha", "2"])
    assert "--alpha: invalid value 2.0" in capsys.readouterr().err
