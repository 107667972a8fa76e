"""The HTML report and the audit overview (issue 11): self-contained, escaped, and loaded by a real browser.

The browser tests run Debian's headless ``chromium`` (``.ci/run`` installs it) on a ``file://`` URL with
networking disabled, read the DOM it dumps, grep its console log for errors, and read its net log for any
request the page made; they skip, saying why, when no chromium is found.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cbn_inspect import Settings, inspect_source
from cbn_inspect.report.html import audit_html, report_fragment, report_html

SAMPLES = Path(__file__).resolve().parent.parent / "sample_checkpoints"
EVIL = '<script>alert("x")</script>&<b>'


@pytest.fixture(scope="module")
def evil_path(tmp_path_factory) -> Path:
    """A checkpoint whose tensor names and metadata hold HTML."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    state = {f"block{i}{EVIL}.weight": rng.standard_normal((4, 4, 3, 3)).astype(np.float32) for i in range(3)}
    path = tmp_path_factory.mktemp("evil") / "evil<i>.safetensors"
    save_file(state, str(path), metadata={"note": EVIL})
    return path


def browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def load_in_chromium(page: Path, tmp_path: Path) -> tuple[str, list[str], list[str]]:
    """(DOM after scripts ran, console lines, URLs the page requested) for ``page`` opened from disk."""
    exe = browser()
    if exe is None:
        pytest.skip("chromium not found (Debian: apt-get install chromium; .ci/run installs it as root)")
    netlog = tmp_path / "net.json"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
           "--disable-extensions", "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--proxy-server=127.0.0.1:9", "--enable-logging=stderr", "--v=0", f"--log-net-log={netlog}",
           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.resolve().as_uri()]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    events = json.loads(netlog.read_text())["events"] if netlog.exists() and netlog.stat().st_size else []
    # The page's own requests; the browser's background ones (updates, accounts) have no origin.
    urls = sorted({e["params"]["url"] for e in events
                   if "url" in e.get("params", {}) and e["params"].get("initiator", "not an origin") != "not an origin"
                   and not e["params"]["url"].startswith(("file:", "data:"))})
    return run.stdout, console, urls


# --- the document ----------------------------------------------------------------------------------------------

def test_report_html_is_self_contained(planted_path):
    report = inspect_source(planted_path, Settings(keep_spectra=True))
    page = report_html(report)
    assert page.startswith("<!DOCTYPE html>")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    for tag in ("<link", "<script src", "@import", "url(", "<iframe"):
        assert tag not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert page.count("data:image/png;base64,") == 3  # heat maps, spectra, frequency maps
    assert page.count("<tr class=") == len(report.layers)
    assert "rank 8 = 3 @ deg 0, 4 @ deg 1, 1 @ deg 2" in page
    assert "tolerance.rule" in page and "bottleneck.min_gap" in page  # the settings


def test_names_from_files_are_escaped(evil_path):
    report = inspect_source(evil_path)
    for page in (report_html(report, figures=False), report_fragment(report)):
        assert EVIL not in page and "<script>alert" not in page and "<i>" not in page
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&lt;b&gt;" in page


def test_jupyter_view_is_a_fragment(planted_path):
    report = inspect_source(planted_path)
    fragment = report._repr_html_()
    assert fragment.startswith('<div class="cbn">') and "<html" not in fragment
    assert "<svg" in fragment and "<table" in fragment and "data:image/png" not in fragment


def test_cli_html(cli, tmp_path):
    out = tmp_path / "r.html"
    result = cli(SAMPLES / "cbn_demo.safetensors", "--html", out)
    assert result.exit_code == 0, result.stderr
    page = out.read_text()
    assert "cbn_demo.safetensors" in page and page.count("data:image/png;base64,") == 3
    assert "layers.1 → layers.10" in page


def test_audit_html(cli, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    out = tmp_path / "zoo.html"
    result = cli("audit", SAMPLES / "cbn_demo.safetensors", SAMPLES / "digits_cnn.safetensors", bad, "--html", out,
                 "--jobs", "1", "--quiet")
    assert result.exit_code == 8, result.stderr
    page = out.read_text()
    assert page.count("<tr class=") == 3
    assert "Failures" in page and "broken.safetensors" in page and "unreadable" in page
    assert "layers.1 → layers.10" in page and "0.46 weak" in page
    assert page.count('<svg class="spark"') == 2  # one per model analysed; the failed row has none


# --- in a browser ------------------------------------------------------------------------------------------------

def test_browser_sees_requests_and_errors(tmp_path):
    """The checks below can fail: a page with a remote image and a script error is caught by both."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://example.invalid/a.png">'
                    "<script>undefinedFunction();</script></body></html>")
    dom, console, urls = load_in_chromium(page, tmp_path)
    assert "example.invalid" in " ".join(urls)
    assert any("Uncaught ReferenceError" in line for line in console)


def test_report_html_in_chromium(cli, tmp_path):
    out = tmp_path / "report.html"
    assert cli(SAMPLES / "cbn_demo.safetensors", "--html", out).exit_code == 0
    dom, console, urls = load_in_chromium(out, tmp_path)
    assert console == [], console
    assert urls == [], urls
    assert 'data-sort="ready"' in dom  # the sorting script ran
    assert dom.count("<tr class=") == 12 and dom.count("<img ") == 3
    assert "Bottleneck" in dom or "bottleneck layers.1" in dom


def test_audit_html_in_chromium(cli, tmp_path):
    out = tmp_path / "zoo.html"
    result = cli("audit", *sorted(SAMPLES.glob("*.safetensors")), "--html", out, "--jobs", "1", "--quiet")
    assert result.exit_code == 0, result.stderr
    dom, console, urls = load_in_chromium(out, tmp_path)
    assert console == [] and urls == []
    assert dom.count("<tr class=") == 4 and 'data-sort="ready"' in dom


def test_table_sorts_in_chromium(cli, tmp_path):
    """Click the 'modes' heading twice (a script appended to a copy of the page) and read the row order."""
    out = tmp_path / "report.html"
    assert cli(SAMPLES / "cbn_demo.safetensors", "--html", out).exit_code == 0
    probe = ("<script>var t=document.querySelector('table.sortable'),h=t.tHead.rows[0].cells[5];"
             "var order=function(){return Array.prototype.map.call(t.tBodies[0].rows,"
             "function(r){return r.cells[0].textContent;}).join(',');};"
             "h.click();var up=order();h.click();var down=order();"
             "document.body.setAttribute('data-up',up);document.body.setAttribute('data-down',down);</script>")
    page = tmp_path / "probe.html"
    page.write_text(out.read_text().replace("</body>", probe + "</body>"))
    dom, console, urls = load_in_chromium(page, tmp_path)
    assert console == [] and urls == []
    up = re.search(r'data-up="([^"]*)"', dom).group(1).split(",")
    down = re.search(r'data-down="([^"]*)"', dom).group(1).split(",")
    modes = {0: 9, 1: 10, 2: 10, 3: 10, 4: 10, 5: 11, 6: 11, 7: 11, 8: 10, 9: 10, 10: 12, 11: 25}
    assert [modes[int(i)] for i in up] == sorted(modes.values())
    assert [modes[int(i)] for i in down] == sorted(modes.values(), reverse=True)
    assert up[-1] == "11" and down[0] == "11"
