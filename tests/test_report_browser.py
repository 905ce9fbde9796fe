"""The HTML report in a real browser: Debian's headless Chromium renders the demo report, prints it to PDF and
takes a screenshot; its network log shows the page asks for nothing.

Skipped where Chromium is missing (`apt-get install -y chromium`), except with CI_REQUIRE_CHROMIUM=1.
Chromium is kept off the network: no host name resolves and its proxy is a closed port on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from auditors.reports import read_findings, write_reports
from tests.test_reports import DEMO_FAILING_PAIRS, DEMO_OBSERVED_ACCESS, DEMO_PAIRS, scan_demo

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# Attributes through which a page loads something by itself (an <a href> only goes somewhere when followed).
LOADING_ATTRIBUTES = {"src", "srcset", "href", "data", "poster", "action", "formaction", "background", "manifest",
                      "ping", "xlink:href"}


@pytest.fixture(scope="module")
def chromium() -> str:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        if os.environ.get("CI_REQUIRE_CHROMIUM") == "1":
            pytest.fail(f"Chromium is required in CI but {CHROMIUM} is missing (apt-get install -y chromium)")
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound by us (so nobody else listens there), never listening."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> Path:
    """The demo scanned with its exemptions file, reported with the run's own record."""
    out = tmp_path_factory.mktemp("demo-report")
    findings, run = scan_demo(out)
    write_reports(findings, run, out)
    return out


def browse(chromium: str, closed_port: int, profile: Path, url: str, *flags: str) -> subprocess.CompletedProcess:
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}",
               "--host-resolver-rules=MAP * ~NOTFOUND", f"--proxy-server=http://127.0.0.1:{closed_port}",
               *flags, url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


class _Tables(HTMLParser):
    """Every table of a page as rows of (tag, class, text) cells, and the page's text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.text: list[str] = []
        self._open: list[dict] = []
        self._cell: list | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "table":
            self._open.append({"class": attributes.get("class") or "", "rows": []})
        elif tag == "tr" and self._open:
            self._open[-1]["rows"].append([])
        elif tag in ("td", "th") and self._open:
            self._cell = [tag, attributes.get("class") or "", ""]

    def handle_endtag(self, tag):
        if tag == "table" and self._open:
            self.tables.append(self._open.pop())
        elif tag in ("td", "th") and self._cell is not None and self._open:
            self._open[-1]["rows"][-1].append((self._cell[0], self._cell[1], " ".join(self._cell[2].split())))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell[2] += " " + data


def _table_with(page: _Tables, *headers: str) -> list[list[tuple[str, str, str]]]:
    """The rows of the one table whose header row has these column names."""
    found = [t["rows"] for t in page.tables if t["rows"] and all(
        any(cell[2] == header for cell in t["rows"][0]) for header in headers)]
    assert len(found) == 1, headers
    return found[0]


def test_browser_dom_shows_the_counts_and_a_known_failing_pair(chromium, closed_port, demo_report, tmp_path):
    summary = json.loads((demo_report / "summary.json").read_text())
    overview = summary["overview"]
    assert overview["pairsFail"] == len(DEMO_FAILING_PAIRS)
    dom = browse(chromium, closed_port, tmp_path / "profile", (demo_report / "report.html").as_uri(),
                 "--dump-dom").stdout
    page = _Tables()
    page.feed(dom)
    text = " ".join(" ".join(page.text).split())
    assert f"{overview['pairsFail']} of {overview['pairs']} cluster → registry pairs cannot pull" in text
    assert f"Pairs that cannot pull {overview['pairsFail']}" in text

    # the matrix: every demo pair with its verdict and, where it is not Pass, its root cause
    matrix = next(t for t in page.tables if "matrix" in t["class"])
    header, *rows = matrix["rows"]
    registries = [cell[2].split()[0] for cell in header]
    cells = {(row[0][2].split()[0], registries[i]): cell for row in rows for i, cell in enumerate(row) if i}
    symbols = {"Fail": "✗", "Unknown": "?", "Pass": "✓"}
    shown = {key: cell[1:] for key, cell in cells.items() if cell[1] != "none"}
    assert shown == {key: (verdict.lower(), f"{symbols[verdict]} {verdict}" + (f" root cause {root}" if root else ""))
                     for key, (verdict, root) in DEMO_PAIRS.items()}
    assert cells[("aks-web-eastus", "acrcontosoedge")][1:] == ("fail", "✗ Fail root cause AKS-ACR-001")
    assert sum(cell[1] == "fail" for cell in cells.values()) == overview["pairsFail"]

    # the worst pairs: root cause with its stage, the other failing checks, what Container Insights saw
    worst = _table_with(page, "Root cause", "Other checks", "Observed pull failures")
    web = [row for row in worst[1:]
           if row[0][2].startswith("aks-web-eastus") and row[1][2].startswith("acrcontosoedge")]
    assert len(web) == 1
    assert web[0][2][2] == "✗ Fail" and web[0][3][2].startswith("AKS-ACR-001 (permission)")
    assert web[0][4][2].startswith("AKS-ACR-003 ✗ Fail AKS-ACR-002 ✗ Fail AKS-ACR-008 ✗ Fail does not block pulls")
    assert web[0][5][2].startswith("14 Forbidden")
    assert len(worst) - 1 == overview["pairsFail"] + overview["pairsUnknown"]

    # observed pull failures: the pairs with access failures, most first
    observed = _table_with(page, "Pair verdict", "Failed pulls", "Client IPs ACR refused")
    assert [(row[0][2].split()[0], row[1][2].split()[0], row[3][2]) for row in observed[1:]] == [
        (*pair, f"{count} {name}") for pair, (name, count) in sorted(DEMO_OBSERVED_ACCESS.items(),
                                                                     key=lambda item: -item[1][1])]

    # exemptions: EX-0017 expired (its finding counts again), EX-0042 in force and exempting one finding
    exemptions = _table_with(page, "Exemption", "State", "Exempted here")
    assert [(row[0][2], row[1][2], row[5][2]) for row in exemptions[1:]] == [
        ("EX-0017", "✗ expired", "0"), ("EX-0042", "✓ in force", "1")]
    exempted = _table_with(page, "Exemption", "Expires", "Resource")
    assert [(row[0][2], row[4][2]) for row in exempted[1:]] == [("AKS-ACR-006", "EX-0042")]

    # a row per compliance control the findings name
    findings = list(read_findings(demo_report / "findings.jsonl"))
    controls = _table_with(page, "Control", "Result", "Rules")
    assert {row[0][2] for row in controls[1:]} == {c for f in findings for c in f["Controls"]}


def test_browser_prints_the_report_to_pdf(chromium, closed_port, demo_report, tmp_path):
    pdf = tmp_path / "report.pdf"
    browse(chromium, closed_port, tmp_path / "profile", (demo_report / "report.html").as_uri(),
           f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    content = pdf.read_bytes()
    assert content.startswith(b"%PDF-") and content.rstrip().endswith(b"%%EOF")
    pages = content.count(b"/Type /Page") - content.count(b"/Type /Pages")
    assert pages >= 2, f"{pages} page(s), {len(content)} bytes"
    if shutil.which("pdftotext"):  # poppler-utils, where installed: the print styles took effect
        text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                              check=True, timeout=60).stdout
        assert "(https://learn.microsoft.com/" in text  # link targets printed
        assert "Pull verdicts" not in text  # the section menu's wording: no menu on paper
        assert "aks-web-eastus" in text and "EX-0017" in text and "MCSB:PA-7" in text


def test_browser_screenshot_is_not_blank(chromium, closed_port, demo_report, tmp_path):
    png = tmp_path / "report.png"
    browse(chromium, closed_port, tmp_path / "profile", (demo_report / "report.html").as_uri(),
           f"--screenshot={png}", "--window-size=1280,2400")
    content = png.read_bytes()
    assert content[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", content[16:24])
    assert (width, height) == (1280, 2400)
    # a blank 1280x2400 page compresses to a few KB; the rendered report is far larger
    assert len(content) > 100_000, len(content)


def _page_requests(chromium: str, closed_port: int, profile: Path, page: Path) -> list[str]:
    """URLs the page itself asked for, from Chromium's network log (the browser's own background requests are
    not the page's: their network isolation key is not the file:// page)."""
    log = profile.parent / f"{page.stem}-netlog.json"
    browse(chromium, closed_port, profile, page.as_uri(), f"--log-net-log={log}", "--dump-dom")
    netlog = json.loads(log.read_text())
    start_job = netlog["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [event["params"]["url"] for event in netlog["events"]
            if event["type"] == start_job and str(event.get("params", {}).get("network_isolation_key", "")).startswith(
                "file://") and not event["params"]["url"].startswith("file:")]


def test_browser_loads_the_report_without_network_requests(chromium, closed_port, demo_report, tmp_path):
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><html lang="en"><head><title>control</title>'
                       '<link rel="stylesheet" href="https://cdn.example.invalid/a.css"></head>'
                       '<body><img src="http://img.example.invalid/x.png" alt=""></body></html>')
    assert sorted(_page_requests(chromium, closed_port, tmp_path / "control-profile", control)) == [
        "http://img.example.invalid/x.png", "https://cdn.example.invalid/a.css"]  # the log does show page requests
    assert _page_requests(chromium, closed_port, tmp_path / "report-profile", demo_report / "report.html") == []


class _LoadingAttributes(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.remote: list[tuple[str, str, str]] = []
        self.links: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self._in_style = tag == "style"
        for name, value in attrs:
            value = (value or "").strip().lower()
            if name == "style":
                self.styles.append(value)
            if name not in LOADING_ATTRIBUTES:
                continue
            if tag == "a" and name == "href":
                self.links.append(value)
            elif value.startswith(("http:", "https:", "//")) or "://" in value:
                self.remote.append((tag, name, value))

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data.lower())


def test_report_html_references_nothing_remote(demo_report):
    html = (demo_report / "report.html").read_text()
    page = _LoadingAttributes()
    page.feed(html)
    assert page.remote == []
    assert not [style for style in page.styles if "url(" in style or "@import" in style]
    for tag in ("<script", "<link", "<img", "<iframe", "<object", "<embed", "<base"):
        assert tag not in html.lower(), tag
    assert page.links and all(link.startswith(("#", "https://learn.microsoft.com/")) for link in page.links)
