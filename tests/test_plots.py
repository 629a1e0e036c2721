"""The offline plots page, and the headless-Chromium check that tells a drawn page from an empty one."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trustdd.experiments import plots
from trustdd.experiments.plots import PAGE, check_page, drawn_charts, offline_template

needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")

# What dvc-render writes per Vega plot (dvc_render.vega.VegaRenderer.DIV)
DIV = """<div id="{id}">
    <script type = "text/javascript">
        var spec = {spec};
        vegaEmbed('#{id}', spec);
    </script>
</div>"""
SPEC = {
    "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
    "data": {"values": [{"x": 0, "y": 1}, {"x": 1, "y": 3}]},
    "mark": "line",
    "encoding": {"x": {"field": "x", "type": "quantitative"}, "y": {"field": "y", "type": "quantitative"}},
}


def _page(tmp_path, template, specs, images=()):
    divs = [DIV.format(id=f"plot{i}", spec=json.dumps(s)) for i, s in enumerate(specs)]
    divs += [f'<div><img src="{name}"></div>' for name in images]
    path = tmp_path / "index.html"
    path.write_text(template.replace("{plot_divs}", "\n".join(divs)))
    return path


def test_offline_template_inlines_vega_and_keeps_dvcs_placeholder():
    html = offline_template()
    assert html.count("{plot_divs}") == 1
    assert "<script src=" not in html and "cdn.jsdelivr" not in html
    assert "window.vegaEmbed" in html or "vegaEmbed=" in html
    assert len(html) > 500_000  # the libraries themselves, not a link to them


def test_drawn_charts_reads_each_container_up_to_the_next():
    dom = (
        '<div id="a"><div class="vega-embed"><svg class="marks" width="3"></svg></div></div>'
        '<div id="b"><div class="vega-embed"><svg viewBox="0 0 16 16"></svg></div></div>'  # only the menu icon
        '<div id="c"><canvas class="marks"></canvas></div>'
    )
    assert drawn_charts(dom, {"a", "b", "c"}) == {"a", "c"}


@needs_chromium
def test_chromium_check_sees_drawn_charts_and_loaded_images(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "grid.png")
    page = _page(tmp_path, offline_template(), [SPEC, SPEC], images=["grid.png"])
    result = check_page(page)
    assert (result.charts_expected, result.charts_drawn) == (2, 2)
    assert (result.images_expected, result.images_loaded) == (1, 1)
    assert result.ok, result.problems


@needs_chromium
def test_chromium_check_catches_an_empty_page_a_broken_spec_and_a_missing_image(tmp_path):
    # DVC's default page loads Vega from a CDN: with no network nothing is drawn
    cdn = PAGE.replace("{bundle}", "").replace(
        "<script></script>", '<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>'
    )
    result = check_page(_page(tmp_path, cdn, [SPEC]))
    assert result.charts_drawn == 0 and not result.ok
    assert "1 chart(s) not drawn: plot0" in result.problems[0]
    broken = dict(SPEC, mark="no_such_mark")
    result = check_page(_page(tmp_path, offline_template(), [SPEC, broken], images=["missing.png"]))
    assert (result.charts_expected, result.charts_drawn) == (2, 1)
    assert result.problems == ["1 chart(s) not drawn: plot1", "1 image(s) did not load"]


def _fake_dvc(monkeypatch, out: str, err: str, code: int = 0, writes: Path | None = None):
    def run(cmd, capture_output, text):
        if writes is not None:
            writes.parent.mkdir(parents=True, exist_ok=True)
            writes.write_text("<html></html>")
        return subprocess.CompletedProcess(cmd, code, out, err)

    monkeypatch.setattr(plots.subprocess, "run", run)
    monkeypatch.setattr(plots, "offline_template", lambda: "{plot_divs}")


def test_a_plots_page_dvc_could_not_make_is_an_error_not_a_success(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _fake_dvc(monkeypatch, "", "DVC failed to load some plots for following revisions: 'workspace'.\n")
    assert plots.main(["show"]) == 1
    err = capsys.readouterr().err
    assert "failed to load some plots" in err  # DVC's own words, passed on
    assert "error: plots show: DVC could not load some plots' inputs (no page was written)" in err
    assert "run `dvc repro`" in err and "offline plots page" not in capsys.readouterr().out
    # a page is written, but without some plots: still an error; a page from an earlier run never passes
    _fake_dvc(monkeypatch, "", "DVC failed to load some plots for following revisions: 'workspace'.\n",
              writes=tmp_path / "dvc_plots/index.html")
    assert plots.main(["show"]) == 1
    _fake_dvc(monkeypatch, "", "", code=0)
    assert plots.main(["show"]) == 1 and not (tmp_path / "dvc_plots/index.html").exists()
    _fake_dvc(monkeypatch, "file:///dvc_plots/index.html\n", "", writes=tmp_path / "dvc_plots/index.html")
    assert plots.main(["show"]) == 0


def test_checking_a_page_that_is_not_there_says_how_to_make_it(tmp_path, capsys):
    assert plots.main(["check", str(tmp_path / "index.html")]) == 1
    err = capsys.readouterr().err
    assert f"error: plots check: {tmp_path / 'index.html'} does not exist: make it with" in err
