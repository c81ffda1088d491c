"""report.py --html: the run as a page, drawn from the events alone, self-contained, checked in headless Chromium."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlsplit
from xml.etree import ElementTree

import pytest
from browser import DOCS_EVENTS, DOCS_FLAGS, DOCS_PNG, chromium, dump_dom, is_blank, screenshot, stamped

from helpers import PYTHON, ROOT
from workqueue.events import read
from workqueue.page import MAX_BARS, page
from workqueue.report import Report, Run

# What each kind of attempt is called on the page (data-kind), by its event.
KIND = {"done": "done", "failed": "failed", "killed": "killed", "unacked": "taken back by the broker"}


def needs_chromium() -> None:
    if chromium() is None:
        pytest.skip("needs Debian's chromium-headless-shell (./run_tests.sh installs it as root on Debian)")


def drawn(dom: str) -> Counter:
    return Counter(re.findall(r'<g class="attempt" data-kind="([^"]+)"', dom))


def expected(events_path: Path) -> Counter:
    """The attempts of a run by kind, from its events file: what the page must draw."""
    kinds = Counter()
    for event in read(str(events_path)):
        if event and event["event"] == "done":
            kinds[KIND["done" if event.get("acked", True) else "unacked"]] += 1
        elif event and event["event"] in ("failed", "killed"):
            kinds[KIND[event["event"]]] += 1
    return kinds


def page_of_demo(output: str) -> Path:
    """The page the demo names at the end of its report, as a file:// address."""
    address = re.search(r"^timeline page: (file://\S+)$", output, re.M)
    assert address, output[-2000:]
    return Path(unquote(urlsplit(address.group(1)).path))


def svg_of(html: str) -> ElementTree.Element:
    """The page's SVG, parsed as XML: a browser draws an SVG that is not well-formed without a word of error,
    so this is where a broken one shows."""
    return ElementTree.fromstring(html[html.index("<svg"):html.index("</svg>") + len("</svg>")])


def assert_page_shows_the_run(output: str, events_path: Path) -> str:
    """The demo's page in headless Chromium: every attempt of the run drawn once, with its kind's mark; the
    ratio in words; no error in the browser's log. Returns the rendered DOM."""
    needs_chromium()
    svg_of(page_of_demo(output).read_text())
    dom, errors, _ = dump_dom(page_of_demo(output))
    assert drawn(dom) == expected(events_path), "a bar per attempt, with the right mark"
    assert errors == [], errors
    assert 'data-line="makespan"' in dom and re.search(r'<p class="ratio" id="ratio">[^<]+</p>', dom)
    return dom


def event(kind: str, **fields) -> str:
    return json.dumps({"event": kind, **fields})


def sample_events(path: Path) -> Path:
    """A run with one attempt of every kind, a broker down, a task parked and one not done."""
    t = 1_700_000_000.0
    lines = [event("published", task_id=n, seconds=1.0, message_id=f"r1.{n}") for n in range(1, 7)]
    lines += [event("done", worker="w1", task_id=1, started=t, finished=t + 1, attempt=1, message_id="r1.1"),
              event("failed", worker="w2", task_id=2, started=t, finished=t + 0.5, attempt=1, message_id="r1.2",
                    outcome="retry in 1 s", error="RuntimeError: no"),
              event("done", worker="w2", task_id=2, started=t + 1.6, finished=t + 2.6, attempt=2, message_id="r1.2"),
              event("killed", worker="w1", task_id=3, started=t + 1, at=t + 1.4, message_id="r1.3"),
              event("done", worker="w2", task_id=3, started=t + 2.7, finished=t + 3.7, attempt=1, message_id="r1.3",
                    acked=False),
              event("done", worker="w2", task_id=3, started=t + 4, finished=t + 5, attempt=1, message_id="r1.3"),
              event("parked", worker="w1", task_id=4, at=t + 2, reason="not a task: bad JSON", message_id="r1.4"),
              event("done", worker="w1", task_id=5, started=t + 2, finished=t + 3, attempt=1, message_id="r1.5"),
              event("broker_down", down=t + 3.1, up=t + 3.9)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_page_draws_every_attempt_with_its_mark_and_names_it_on_hover(tmp_path):
    events_path = sample_events(tmp_path / "events.jsonl")
    html = page(Report(Run().add_all(read(str(events_path))), None, 80), "a run")
    marks = Counter(g.get("data-kind") for g in svg_of(html).iter("{http://www.w3.org/2000/svg}g")
                    if g.get("class") == "attempt")
    assert drawn(html) == marks == expected(events_path) == Counter(
        {"done": 4, "failed": 1, "killed": 1, "taken back by the broker": 1})
    titles = re.findall(r"<title>(task [^<]+)</title>", html)
    dot = " \u00b7 "
    assert dot.join(["task 2", "0.50 s", "attempt 1", "w2", "message id r1.2", "failed, retried later"]) in titles
    assert any(t.startswith("task 3 \u00b7 0.40 s") and t.endswith("killed") for t in titles)
    assert re.search(r'<rect class="downtime"[^>]*><title>broker down 0\.8 s</title>', html)
    assert 'data-line="makespan"' in html and 'data-line="ideal"' not in html, "not judged: tasks not done"
    assert "<li>task 4: not a task: bad JSON</li>" in html and "<li>task 6: still on the queue, or lost</li>" in html


def test_page_of_a_fair_run_marks_the_ideal_and_the_bound_and_says_the_ratio(tmp_path):
    t = 1_700_000_000.0
    lines = [event("published", task_id=n, seconds=s, message_id=f"r.{n}") for n, s in ((1, 2), (2, 1), (3, 1))]
    lines += [event("done", worker="a", task_id=1, started=t, finished=t + 2, attempt=1, message_id="r.1"),
              event("done", worker="b", task_id=2, started=t, finished=t + 1, attempt=1, message_id="r.2"),
              event("done", worker="b", task_id=3, started=t + 1, finished=t + 2.2, attempt=1, message_id="r.3")]
    html = page(Report(Run().add_all(map(json.loads, lines)), None, 80), "fair")
    for line in ("makespan", "ideal", "lower bound"):
        assert f'data-line="{line}"' in html
    ratio = re.search(r'<p class="ratio" id="ratio">([^<]+)</p>', html).group(1)
    assert ratio == ("The run took 2.20 s with 2 worker(s): 10.0% longer than the ideal greedy schedule of its "
                     "tasks (2.00 s), 10.0% longer than the lower bound (2.00 s).")


def test_page_is_self_contained(tmp_path):
    html = page(Report(Run().add_all(read(str(sample_events(tmp_path / "e.jsonl")))), None, 80), "x")
    outside = re.findall(r"(?:src|href)=|<script|@import|url\(|https?://(?!www\.w3\.org/2000/svg\")", html)
    assert outside == [], "no script, style, font or image from anywhere else"


def huge_events(path: Path, attempts: int, workers: int) -> Path:
    """`attempts` tasks of 0.01 to 0.05 s done by `workers` workers back to back: a big run, made fast."""
    t = 1_700_000_000.0
    clocks = [t] * workers
    with open(path, "w") as out:
        for n in range(attempts):
            seconds = 0.01 + (n * 7 % 5) / 100
            worker = n % workers
            out.write(f'{{"event": "published", "task_id": {n}, "seconds": {seconds}, "message_id": "h.{n}"}}\n'
                      f'{{"event": "done", "worker": "w{worker}", "task_id": {n}, "started": {clocks[worker]}, '
                      f'"finished": {clocks[worker] + seconds}, "attempt": 1, "message_id": "h.{n}"}}\n')
            clocks[worker] += seconds
    return path


def test_a_page_of_100000_attempts_draws_busy_slices_and_opens_in_chromium(tmp_path):
    events_path = huge_events(tmp_path / "huge.jsonl", 100_000, 10)
    html_path = tmp_path / "huge.html"
    start = time.monotonic()
    result = subprocess.run([PYTHON, str(ROOT / "report.py"), str(events_path), "--html", str(html_path)],
                            capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    html = html_path.read_text()
    assert "100,000 attempts: too many for a bar each" in html and drawn(html) == Counter()
    slices = html.count('<rect class="slice"')
    assert 10 <= slices <= 10 * 400, slices
    needs_chromium()
    dom, errors, load = dump_dom(html_path)
    assert dom.count('<rect class="slice"') == slices and errors == []
    print(f"\nPAGE 100,000 attempts: report.py --html {seconds:.1f} s, page {len(html) / 1e6:.2f} MB, "
          f"{slices} slices, Chromium --dump-dom {load:.1f} s (MAX_BARS {MAX_BARS})")


def test_report_py_writes_the_page_and_names_it(tmp_path):
    events_path = sample_events(tmp_path / "events.jsonl")
    html_path = tmp_path / "page.html"
    result = subprocess.run([PYTHON, str(ROOT / "report.py"), str(events_path), "--html", str(html_path)],
                            capture_output=True, text=True)
    assert result.returncode == 1, "tasks not done"
    assert result.stdout.endswith(f"timeline page: {html_path.resolve().as_uri()}\n")
    assert drawn(html_path.read_text()) == expected(events_path)


def test_the_docs_screenshot_shows_the_page_report_py_makes(tmp_path):
    """docs/timeline.png is a screenshot of the page report.py makes today from a real run's events (kept in
    docs/); `python3 tests/browser.py docs` remakes both when the page changes."""
    html_path = tmp_path / DOCS_EVENTS.name.replace("-events.jsonl", ".html")
    subprocess.run([PYTHON, str(ROOT / "report.py"), str(DOCS_EVENTS), *DOCS_FLAGS, "--html", str(html_path)],
                   capture_output=True, check=False)
    sha = hashlib.sha256(html_path.read_bytes()).hexdigest()
    assert stamped(DOCS_PNG) == sha, "the page changed since the screenshot: run python3 tests/browser.py docs"
    assert not is_blank(DOCS_PNG)
    needs_chromium()
    png = tmp_path / "now.png"
    screenshot(html_path, png)
    assert not is_blank(png)
