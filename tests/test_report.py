"""`hashbench report`: Markdown and a self-contained HTML report whose every image loads in a browser; its
views (matrix, retrieval examples, hash space, curves); its freshness; the terminal summary of `run`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import write_benchmark
from hashbench.cli import main

# Records every console error and every error event (script errors, and resources that fail to load,
# which fire `error` in the capture phase) from the very start of the page.
RECORD_ERRORS = """<head><script>
window.__errors = [];
const original = console.error;
console.error = (...args) => { window.__errors.push(args.join(" ")); original(...args); };
window.addEventListener("error", e => window.__errors.push(e.message || ("failed to load " + (e.target.src || e.target.href))), true);
</script>"""
CHECK_IMAGES = """<script>
window.addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "img-check";
  out.textContent = JSON.stringify({images: [...document.images].map(i => i.complete && i.naturalWidth > 0),
                                    errors: window.__errors});
  document.body.appendChild(out);
});
</script></body>"""
FIGURES = 10  # 2 image grids, the stealth scatter, t-MAP vs rate, 3 heatmaps, retrieval, hash space, curves
VIEWS = {"matrix": 3, "retrieval": 1, "hash-space": 1, "curves": 1}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A tiny benchmark (one attack at two poison rates) and its report; returns the report folder."""
    from hashbench.benchmark import run_benchmark
    from hashbench.config import load_spec

    folder = tmp_path_factory.mktemp("report")
    bench = write_benchmark(folder, name="report", dataset=dict(name="synthetic", image_size=32, num_classes=4,
                            train_per_class=40, query_per_class=6, database_per_class=60), bits=16, epochs=2, width=8,
                            body='[[attack]]\nname = "badnets"\npoison_rate = [0.05, 0.1]\n\n'
                                 '[[defense]]\nname = "jpeg"\nquality = [90, 50]')
    result = run_benchmark(load_spec(bench), progress_bar=False, echo=lambda m: None)
    assert not result.failures
    assert main(["report", str(folder / "results"), "--output", str(folder / "out")]) == 0
    return folder / "out"


def test_markdown_report_has_tables_figures_conventions_and_versions(report):
    text = (report / "report.md").read_text()
    assert "### synthetic · csq · convnet · 16 bits" in text and "| t-MAP" in text
    figures = re.findall(r"!\[[^]]*\]\((report_files/[^)]+\.png)\)", text)
    # per attack configuration a grid of poisons and one of triggered queries; the scatter; t-MAP vs rate;
    # the views
    assert len(figures) == FIGURES and all((report / f).stat().st_size > 1000 for f in figures)
    assert "t-MAP vs poison rate" in text and "t-MAP vs stealth" in text
    assert "Ties are broken by database index" in text
    assert "metric conventions (results)" in text and "torch" in text


def test_html_report_is_self_contained(report):
    page = (report / "report.html").read_text()
    sources = re.findall(r"<img[^>]* src='([^']*)'", page)
    assert len(sources) == FIGURES and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(src|href)=['\"](https?:|//|file:)", page)
    # the conventions come from the package's data, as a table
    assert "<td>Ties</td><td>Ties are broken by database index" in page


def test_packaged_conventions_match_docs_metrics_md():
    """The conventions a report prints (hashbench/conventions.toml) and docs/metrics.md cannot drift
    apart silently: the same version, and every column the package defines is described on the page."""
    from hashbench import METRIC_CONVENTIONS_VERSION
    from hashbench.conventions import load_conventions

    conventions = load_conventions()
    page = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text()
    assert conventions.version == METRIC_CONVENTIONS_VERSION
    assert f"version {conventions.version}" in page
    missing = [m.name for m in conventions.metrics if f"`{m.name}`" not in page]
    assert not missing, f"docs/metrics.md does not describe {missing}"
    assert "hashbench/conventions.toml" in page


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="needs Debian's `chromium` (apt-get install -y chromium) to render the report")
def test_every_image_of_the_html_report_loads_in_chromium_without_console_errors(report, tmp_path):
    page = tmp_path / "check.html"
    html = (report / "report.html").read_text()
    page.write_text(html.replace("<head>", RECORD_ERRORS, 1).replace("</body>", CHECK_IMAGES))
    browser = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    found = re.search(r'<pre id="img-check">(.*?)</pre>', browser.stdout)
    assert found, f"the check script did not run; chromium printed: {browser.stdout[:500]} {browser.stderr[-500:]}"
    result = json.loads(found.group(1))
    assert result == {"images": [True] * FIGURES, "errors": []}
    # the page itself writes nothing to the console; chromium logs each console message as CONSOLE
    assert not [line for line in browser.stderr.splitlines() if ":CONSOLE" in line]


def _section(page: str, view: str) -> str:
    found = re.search(rf"<section id='{view}'>(.*?)</section>", page, re.S)
    assert found, f"no section {view}"
    return found.group(1)


def test_html_report_shows_the_matrix_retrieval_examples_hash_space_and_curves(report):
    page = (report / "report.html").read_text()
    for view, count in VIEWS.items():
        section = _section(page, view)
        assert len(re.findall(r"<img ", section)) == count, view
        assert "class='note'" not in section, f"{view} says something is missing"
    matrix = _section(page, "matrix")
    assert all(title in matrix for title in ("t-MAP · synthetic", "Δt-MAP vs no defense", "clean-mAP cost"))
    # the retrieval example and hash space show the highest rate; the curves every rate
    assert "badnets @ rate 0.1 · synthetic" in _section(page, "retrieval")
    curves = re.search(r"<figcaption>(.*?)</figcaption>", _section(page, "curves")).group(1)
    assert "synthetic · csq · convnet · 16 bits" in curves


def test_curves_are_the_evaluators_and_cached_with_the_evaluation(report):
    """The stored precision@K of the triggered queries equals the evaluator's precision_at_k on the codes the
    runner stored, so the report draws what the evaluator computes."""
    from hashbench.retrieval import precision_at_k, unpack_codes
    from hashbench.artifacts import CURVES_FILE, DB_CODES_FILE, EVAL_CODES_FILE
    from hashbench.loading import load_dataset
    from hashbench.store import Store

    store = Store(report.parent / "results")
    key, manifest = next((k, m) for k, m in store.finished_stages("evaluate")
                         if m["row"]["defense"] == "none" and m["row"]["attack"] == "badnets")
    assert {CURVES_FILE, EVAL_CODES_FILE} <= set(manifest["files"])
    curves = store.load("evaluate", key, CURVES_FILE)
    codes = store.load("evaluate", key, EVAL_CODES_FILE)
    deps = dict(d.split("/") for d in manifest["config"]["deps"])
    db = store.load("victim", deps["victim"], DB_CODES_FILE)
    splits = load_dataset(store.manifest("attack", deps["attack"])["config"]["dataset"])
    target = torch.zeros(splits.num_classes)
    target[0] = 1
    triggered = unpack_codes(codes["triggered"], int(codes["bits"]))
    for i in (0, len(curves["triggered"]["cutoffs"]) // 2):
        k = int(curves["triggered"]["cutoffs"][i])
        expected = precision_at_k(triggered, unpack_codes(db["packed"], int(db["bits"])),
                                  target.expand(len(triggered), -1), splits.database.labels, k)
        assert float(curves["triggered"]["precision"][i]) == pytest.approx(expected)
    assert float(curves["clean"]["recall"][-1]) == pytest.approx(1.0)  # the last cut-off is the whole database


def test_report_check_says_when_the_results_moved_on(report, tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(report.parent / "results", results)
    shutil.copy(report / "report.html", tmp_path / "report.html")
    check = ["report", str(results), "--output", str(tmp_path), "--check"]
    assert main(check) == 0
    assert "is up to date" in capsys.readouterr().out

    # a results row the report does not show (as when an evaluation finishes after the report)
    page = tmp_path / "report.html"
    html = page.read_text()
    evaluate = sorted((results / "stages" / "evaluate").iterdir())[0]
    page.write_text(re.sub(rf'"evaluate/{evaluate.name}": "[0-9a-f]+", ', "", html))
    assert main(check) == 1
    assert f"1 results row(s) finished after the report was written (evaluate/{evaluate.name})" in capsys.readouterr().out
    page.write_text(html)

    # a stage recomputed after the report: its manifest (start time, checksums) differs
    manifest = json.loads((evaluate / "manifest.json").read_text())
    manifest["started"] += 1
    (evaluate / "manifest.json").write_text(json.dumps(manifest))
    assert main(check) == 1
    assert f"stage evaluate/{evaluate.name} was recomputed" in capsys.readouterr().out

    # a report from before reports listed their stages
    page.write_text(re.sub(r"<script type='application/json'.*?</script>", "", html, flags=re.S))
    assert main(check) == 1
    assert "does not list the stages" in capsys.readouterr().out


def test_rows_stored_before_curves_and_codes_existed_say_how_to_get_them(report, tmp_path):
    from hashbench.report_html import build_report
    from hashbench.artifacts import CURVES_FILE, EVAL_CODES_FILE

    results = tmp_path / "results"
    shutil.copytree(report.parent / "results", results)
    for folder in (results / "stages" / "evaluate").iterdir():  # as an older hashbench stored them
        manifest = json.loads((folder / "manifest.json").read_text())
        for name in (CURVES_FILE, EVAL_CODES_FILE):
            manifest["files"].pop(name, None)
            (folder / name).unlink(missing_ok=True)
        (folder / "manifest.json").write_text(json.dumps(manifest))
    views = {view.id: view for view in build_report(results).views}
    for view in ("retrieval", "hash-space", "curves"):
        assert not views[view].figures
        assert any("hashbench run FILE --force evaluate" in note for note in views[view].notes), view
    assert "No stored curves for 2 row(s)" in views["curves"].notes[0]
    assert len(views["matrix"].figures) == 3  # the matrix needs only the rows


def test_run_prints_the_grid_and_refreshes_the_report(report, capsys):
    bench, results = report.parent / "bench.toml", report.parent / "results"
    assert main(["run", str(bench), "-q", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert not (results / "report.html").exists()
    assert "defense \\ attack" in out and "jpeg quality=50" in out and "every metric: --long" in out
    assert main(["run", str(bench), "-q"]) == 0
    assert f"Report: {results / 'report.html'} (and report.md)" in capsys.readouterr().out
    assert main(["report", str(results), "--check"]) == 0
    # a cached re-run keeps a report that is up to date (drawing it is most of a re-run's time) ...
    drawn = (results / "report.html").stat().st_mtime_ns
    assert main(["run", str(bench), "-q"]) == 0
    assert f"Report: {results / 'report.html'} is up to date" in capsys.readouterr().out
    assert (results / "report.html").stat().st_mtime_ns == drawn
    # ... and redraws one that is not
    (results / "report.md").unlink()
    assert main(["run", str(bench), "-q"]) == 0
    assert f"Report: {results / 'report.html'} (and report.md)" in capsys.readouterr().out
    assert main(["run", str(bench), "-q", "--no-report", "--long"]) == 0
    assert "| t-MAP clean model" in capsys.readouterr().out


def _row(attack: str, defense: str, params: str, t_map: float, rate: float = 0.1, **extra) -> dict:
    clean = attack == "(clean)"
    return {"dataset": "synthetic", "dataset_params": "{}", "method": "csq", "backbone": "convnet", "bits": 16,
            "seed": 0, "attack": attack, "attack_params": "" if clean else "{}", "poison_rate": 0.0 if clean else rate,
            "surrogate": "", "target": "" if clean else "class_0", "defense": defense, "defense_params": params,
            "clean_fraction": None if clean else 0.05, "t_map": t_map, "clean_map": 0.5,
            "t_map_clean_model": 0.11, "t_map_untriggered": 0.12, "stage_key": f"{attack}{defense}{params}{rate}"} | extra


def test_terminal_grid_is_defense_by_attack_with_varied_parameters_in_value_order():
    """Issue 17 row 2: a grid `quality = [100, 75]` gives two rows that say which is which, in value order
    (75 before 100, not the string order) whatever order the stages are read in."""
    from hashbench.report import add_defense_deltas, summary_grid, summary_tables

    rows = [_row("(clean)", "none", "", float("nan"))]
    for attack, base in (("wanet", 0.5), ("badnets", 0.9)):
        rows += [_row(attack, "jpeg", '{"quality": 100}', base - 0.1), _row(attack, "none", "{}", base),
                 _row(attack, "jpeg", '{"quality": 75}', base - 0.3)]
    for order in (rows, rows[::-1]):
        text = summary_grid(add_defense_deltas(pd.DataFrame(order)))
        lines = [line.split() for line in text.splitlines()]
        assert ["defense", "\\", "attack", "badnets", "wanet"] in lines
        body = [line for line in lines if line and line[0] in ("none", "jpeg", "(clean", "(no")]
        assert body == [["none", "0.900", "0.500"], ["jpeg", "quality=75", "0.600", "0.200"],
                        ["jpeg", "quality=100", "0.800", "0.400"], ["(clean", "model)", "0.110", "0.110"],
                        ["(no", "trigger)", "0.120", "0.120"]]
        table = summary_tables(add_defense_deltas(pd.DataFrame(order)))
        assert table.index("jpeg quality=75") < table.index("jpeg quality=100")


def test_anchor_code_is_the_bitwise_majority_of_the_target_class_with_ties_plus_one():
    from hashbench.report_views import anchor_code

    codes = torch.tensor([[1.0, 1, -1], [1, -1, -1], [-1, 1, 1]])
    # target rows 0 and 1: column sums 2, 0 (a tie: +1, as sign maps 0) and -2; row 2 is not counted
    assert anchor_code(codes, torch.tensor([True, True, False])).tolist() == [1, 1, -1]


def test_a_corrupt_code_file_leaves_out_its_pictures_not_the_report(report, tmp_path):
    from hashbench.report_html import build_report

    results = tmp_path / "results"
    shutil.copytree(report.parent / "results", results)
    for codes in (results / "stages" / "victim").glob("*/database_codes.pt"):
        data = bytearray(codes.read_bytes())
        data[-1] ^= 0xFF
        codes.write_bytes(bytes(data))
    views = {view.id: view for view in build_report(results).views}
    for view in ("retrieval", "hash-space"):
        assert not views[view].figures
        assert "database_codes.pt does not match its checksum" in views[view].notes[0], views[view].notes
    assert len(views["matrix"].figures) == 3 and len(views["curves"].figures) == 1
