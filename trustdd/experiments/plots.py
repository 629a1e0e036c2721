"""DVC plots that render offline, and a headless-browser check that they really render.

``dvc plots show`` writes an HTML page that loads Vega from a CDN, so without network it shows an empty
page. ``python -m trustdd.experiments.plots show`` runs ``dvc plots show`` (or ``diff``) with a page template that
carries the Vega, Vega-Lite and Vega-Embed libraries inline (from the ``vl-convert-python`` wheel).
``python -m trustdd.experiments.plots check`` opens the page in headless Chromium and counts the charts that were
drawn and the images that loaded; it fails if any plot is missing or broke.

    python -m trustdd.experiments.plots show                # -> dvc_plots/index.html
    python -m trustdd.experiments.plots diff main           # compare the workspace with main
    python -m trustdd.experiments.plots check dvc_plots/index.html
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path("dvc_plots")
VEGA_LITE = "v5.21"  # the templates in .dvc/plots use the Vega-Lite 5 schema, as DVC's own do

PAGE = """<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  <title>trustdd plots</title>
  <script>{bundle}</script>
  <style>
    body { font-family: sans-serif; margin: 16px; }
    body > div { margin-bottom: 32px; }
    img { image-rendering: pixelated; min-width: 280px; }
  </style>
</head>
<body>
  {plot_divs}
</body>
</html>
"""


def offline_template() -> str:
    """An HTML page template for ``dvc plots show --html-template``, with the Vega libraries inline."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE).replace("</script", "<\\/script")
    return PAGE.replace("{bundle}", bundle)  # not str.format: CSS and JavaScript are full of braces


class PlotsError(RuntimeError):
    """DVC wrote no page, or left plots out of it, or the page to check is not there."""


def dvc_plots(command: str, args: list[str], out: Path = OUT) -> Path:
    """Run ``dvc plots <command> <args>`` with the offline template; returns the page written. PlotsError
    when DVC fails, writes no page, or reports plots it could not load (their inputs not made yet)."""
    page = out / "index.html"
    page.unlink(missing_ok=True)  # a page left from an earlier run must not pass for this one's
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "page.html"
        template.write_text(offline_template(), encoding="utf-8")
        cmd = ["dvc", "plots", command, *args, "--html-template", str(template), "-o", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    said = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise PlotsError(f"`{' '.join(cmd[:3])}` failed (exit {proc.returncode}); see DVC's message above")
    if "failed to load" in said or not page.exists():
        missing = "no page was written" if not page.exists() else f"{page} lacks them"
        raise PlotsError(
            f"DVC could not load some plots' inputs ({missing}): the files under dvc.yaml's plots: come from "
            "the pipeline, so run `dvc repro` (or `make repro`) first; `dvc plots show -v` names each file"
        )
    return page


@dataclass
class PageCheck:
    """What a browser found on a DVC plots page."""

    charts_expected: int = 0  # vegaEmbed calls in the page
    charts_drawn: int = 0  # of those, containers holding a drawn canvas or svg
    images_expected: int = 0
    images_loaded: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.charts_expected + self.images_expected > 0


def drawn_charts(dom: str, chart_ids: set[str]) -> set[str]:
    """The chart containers that hold a drawn Vega scene (a canvas or svg of class "marks"). DVC writes
    one container per plot, one after another, so each container runs to the start of the next."""
    starts = sorted((m.start(), m.group(1)) for m in re.finditer(r'<div id="([^"]+)"', dom) if m.group(1) in chart_ids)
    drawn = set()
    for (start, chart), (end, _) in zip(starts, starts[1:] + [(len(dom), "")]):
        if re.search(r'<(?:canvas|svg)[^>]*class="marks"', dom[start:end]):
            drawn.add(chart)
    return drawn


LOAD_CHECK = """
<script>
window.addEventListener('load', () => {
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0));
  document.body.setAttribute('data-images', String(document.images.length));
  document.body.setAttribute('data-broken-images', String(broken.length));
});
</script>
"""


def check_page(page: Path, chromium: str = "chromium", budget_ms: int = 20000) -> PageCheck:
    """Open ``page`` in headless Chromium (no network), let it run, and count what was drawn."""
    page = Path(page).resolve()
    source = page.read_text(encoding="utf-8")
    chart_ids = set(re.findall(r"vegaEmbed\('#([^']+)'", source))
    result = PageCheck(charts_expected=len(chart_ids))
    if shutil.which(chromium) is None:
        result.problems.append(f"{chromium!r} not found (Debian: apt-get install chromium)")
        return result
    with tempfile.TemporaryDirectory() as tmp:
        probe = page.with_name(f".check-{page.name}")  # beside the page, so relative image paths resolve
        cut = source.rindex("</body>")  # the last one: the inline JavaScript has its own
        probe.write_text(source[:cut] + LOAD_CHECK + source[cut:], encoding="utf-8")
        try:
            proc = subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    f"--user-data-dir={tmp}",
                    f"--virtual-time-budget={budget_ms}",
                    "--dump-dom",
                    probe.as_uri(),
                ],
                capture_output=True,
                text=True,
                timeout=180,
            )
        finally:
            probe.unlink(missing_ok=True)
    if proc.returncode != 0:
        result.problems.append(f"chromium exited with {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return result
    drawn = drawn_charts(proc.stdout, chart_ids)
    result.charts_drawn = len(drawn)
    images = re.search(r'data-images="(\d+)"', proc.stdout)
    broken = re.search(r'data-broken-images="(\d+)"', proc.stdout)
    if images is None or broken is None:
        result.problems.append("the page never finished loading")
    else:
        result.images_expected = int(images.group(1))
        result.images_loaded = result.images_expected - int(broken.group(1))
    missing = sorted(chart_ids - drawn)
    if missing:
        result.problems.append(f"{len(missing)} chart(s) not drawn: {', '.join(missing)}")
    if result.images_loaded < result.images_expected:
        result.problems.append(f"{result.images_expected - result.images_loaded} image(s) did not load")
    return result


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("show", "diff", "check", "template"):
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "template":
        sys.stdout.write(offline_template())
        return 0
    try:
        if command in ("show", "diff"):
            print(f"offline plots page: {dvc_plots(command, rest)}")
            return 0
        page = Path(rest[0]) if rest else OUT / "index.html"
        if not page.is_file():
            raise PlotsError(f"{page} does not exist: make it with `python -m trustdd.experiments.plots show`")
    except PlotsError as err:
        print(f"error: plots {command}: {err}", file=sys.stderr)
        return 1
    result = check_page(page)
    print(
        f"charts drawn {result.charts_drawn}/{result.charts_expected}, "
        f"images loaded {result.images_loaded}/{result.images_expected}"
    )
    for problem in result.problems:
        print(f"problem: {problem}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
