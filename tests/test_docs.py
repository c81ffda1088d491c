"""The README and docs/ stay true: every test they cite exists, every link they make leads somewhere."""

from __future__ import annotations

import re

from helpers import ROOT, WorkerProcess, run_publisher
from workqueue.brokers import wait_for_consumers

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_test_the_docs_cite_exists():
    defined = set()
    for path in (ROOT / "tests").glob("test_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)", path.read_text(), re.M))
    for page in PAGES:
        cited = set(re.findall(r"`(test_\w+)(?:\[[^\]]*\])?`", page.read_text()))
        assert cited <= defined, f"{page.name} cites tests that do not exist: {sorted(cited - defined)}"


def test_every_link_in_the_docs_leads_to_a_file_of_the_project():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def sample_pattern(sample: str, queue: str) -> str:
    """A regex for a README sample line: its words as they are, its numbers, worker name and ids as any."""
    text = re.sub(r"task ids: [^;]+;", "\0IDS\0", sample.replace("task_queue", "\0QUEUE\0"))
    text = re.sub(r"worker-[0-9a-f]{4}", "\0NAME\0", text)
    pattern = re.sub(r"\d+(?:\\\.\d+)?", lambda _number: r"\d+(?:\.\d+)?", re.escape(text))
    return (pattern.replace("\0IDS\0", r"task ids: [\d, -]+;").replace("\0NAME\0", "worker-[0-9a-f]{4}")
            .replace("\0QUEUE\0", re.escape(queue)))


def test_the_readmes_sample_output_is_what_a_worker_prints(broker, queue, tmp_path):
    block = re.search(r"```\n(\[worker-.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    samples = [line for line in block.splitlines() if line != "..."]
    worker = WorkerProcess(broker.url, queue, tmp_path, "", "--idle-timeout", "0.5")
    wait_for_consumers(broker.url, queue, 1)
    assert run_publisher(broker.url, queue, "--durations", "0.1,0.1").returncode == 0
    assert worker.wait() == 0, worker.output
    printed = worker.output.splitlines()
    for sample in samples:
        pattern = sample_pattern(sample, queue)
        assert any(re.fullmatch(pattern, line) for line in printed), f"{sample!r} is not printed:\n{worker.output}"
