"""`hashbench report`: Markdown and a self-contained HTML report whose every image loads in a browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from hashbench.cli import main

BENCH = """
[benchmark]
name = "report"
seeds = [0]
device = "cpu"
results = "{results}"

[dataset]
name = "synthetic"
image_size = 32
num_classes = 4
train_per_class = 40
query_per_class = 6
database_per_class = 60

[victim]
method = "csq"
backbone = "convnet"
bits = 16
epochs = 2
backbone_params.convnet = {{ width = 8 }}

[target]
label = "class_0"

[[attack]]
name = "badnets"
poison_rate = [0.05, 0.1]
"""
CHECK_IMAGES = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "img-check";
  out.textContent = JSON.stringify([...document.images].map(i => i.complete && i.naturalWidth > 0));
  document.body.appendChild(out);
});
</script></body>"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A tiny benchmark (one attack at two poison rates) and its report; returns the report folder."""
    from hashbench.benchmark import run_benchmark
    from hashbench.config import load_spec

    folder = tmp_path_factory.mktemp("report")
    (folder / "bench.toml").write_text(BENCH.format(results=folder / "results"))
    result = run_benchmark(load_spec(folder / "bench.toml"), progress_bar=False, echo=lambda m: None)
    assert not result.failures
    assert main(["report", str(folder / "results"), "--output", str(folder / "out")]) == 0
    return folder / "out"


def test_markdown_report_has_tables_figures_conventions_and_versions(report):
    text = (report / "report.md").read_text()
    assert "### synthetic · csq · convnet · 16 bits" in text and "| t-MAP" in text
    figures = re.findall(r"!\[[^]]*\]\((report_files/[^)]+\.png)\)", text)
    # per attack configuration a grid of poisons and one of triggered queries; the scatter; t-MAP vs rate
    assert len(figures) == 4 and all((report / f).stat().st_size > 1000 for f in figures)
    assert "t-MAP vs poison rate" in text and "t-MAP vs stealth" in text
    assert "Ties are broken by database index" in text
    assert "metric conventions (results)" in text and "torch" in text


def test_html_report_is_self_contained(report):
    page = (report / "report.html").read_text()
    sources = re.findall(r"<img[^>]* src='([^']*)'", page)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(src|href)=['\"](https?:|//|file:)", page)
    assert "<strong>Ties are broken by database index</strong>" in page


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="needs Debian's `chromium` (apt-get install -y chromium) to render the report")
def test_every_image_of_the_html_report_loads_in_chromium(report, tmp_path):
    page = tmp_path / "check.html"
    page.write_text((report / "report.html").read_text().replace("</body>", CHECK_IMAGES))
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout
    found = re.search(r'<pre id="img-check">(.*?)</pre>', dom)
    assert found, f"the check script did not run; chromium printed: {dom[:500]}"
    loaded = json.loads(found.group(1))
    assert loaded == [True] * 4
