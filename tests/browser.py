"""Headless Chromium for the tests of report.py's page: the rendered DOM, the browser's errors, a screenshot.

Debian's chromium-headless-shell (run_tests.sh installs it as root on Debian, like the other test tools).
Also a tool: `python3 tests/browser.py docs` remakes the docs' timeline page and its screenshot from the
events of a real run kept in docs/ (docs/timeline-events.jsonl), stamping the page's SHA-256 into the PNG,
so that test_page.py can tell when the screenshot no longer shows the page report.py makes.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CANDIDATES = ("chromium-headless-shell", "/usr/lib/chromium/chromium-headless-shell", "chromium")
DOCS_EVENTS, DOCS_PAGE, DOCS_PNG = (ROOT / "docs" / name for name in
                                    ("timeline-events.jsonl", "timeline.html", "timeline.png"))
STAMP = b"page-sha256"
# The page holds the text report, whose timeline is as wide as the terminal: the docs' page is made at one width.
DOCS_FLAGS = ("--width", "80")


def chromium() -> str | None:
    for candidate in CANDIDATES:
        found = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if found:
            return found
    return None


def run(page: Path, *flags: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """Chromium on the page (no network: file:// only), with its log on stderr; and the seconds it took."""
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--window-size=1280,900",
                   *flags, page.resolve().as_uri()]
        start = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return result, time.monotonic() - start


def dump_dom(page: Path) -> tuple[str, list[str], float]:
    """The DOM as Chromium rendered it, the errors it logged about the page, and the seconds it took."""
    result, seconds = run(page, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, page_errors(result.stderr), seconds


def page_errors(log: str) -> list[str]:
    """The lines of Chromium's log about the page: console messages and failed loads (not its own start-up
    noise about D-Bus or the GPU, which has nothing to do with the page)."""
    return [line for line in log.splitlines()
            if ("CONSOLE" in line or "Uncaught" in line or "net::ERR" in line or "Failed to load" in line)]


def screenshot(page: Path, png: Path) -> None:
    result, _ = run(page, f"--screenshot={png}")
    assert png.exists(), result.stderr[-2000:]


def png_pixels(png: Path) -> tuple[int, int, bytes]:
    """Width, height and the decompressed (still filtered) image data of a PNG."""
    data = png.read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    idat, offset = b"", 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"IDAT":
            idat += data[offset + 8:offset + 8 + length]
        offset += 12 + length
    return width, height, zlib.decompress(idat)


def is_blank(png: Path) -> bool:
    """Whether a screenshot is one colour: its filtered rows then hold almost nothing but zeros (and the
    filter bytes), whatever the filter; a drawn page holds many different values."""
    _, _, pixels = png_pixels(png)
    return len(set(pixels)) < 8


def stamp(png: Path, page_sha: str) -> None:
    """Add a tEXt chunk naming the SHA-256 of the page the screenshot shows."""
    data = png.read_bytes()
    body = b"tEXt" + STAMP + b"\0" + page_sha.encode()
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    png.write_bytes(data[:33] + chunk + data[33:])  # after the 8-byte signature and the 25-byte IHDR chunk


def stamped(png: Path) -> str | None:
    data = png.read_bytes()
    marker = b"tEXt" + STAMP + b"\0"
    at = data.find(marker)
    if at < 0:
        return None
    length = struct.unpack(">I", data[at - 4:at])[0]
    return data[at + len(marker):at + 4 + length].decode()


def make_docs_page() -> str:
    """docs/timeline.html from docs/timeline-events.jsonl, as report.py makes it; its SHA-256."""
    subprocess.run([sys.executable, str(ROOT / "report.py"), str(DOCS_EVENTS), *DOCS_FLAGS, "--html",
                    str(DOCS_PAGE)], capture_output=True, cwd=ROOT)
    return hashlib.sha256(DOCS_PAGE.read_bytes()).hexdigest()


if __name__ == "__main__" and sys.argv[1:] == ["docs"]:
    sha = make_docs_page()
    screenshot(DOCS_PAGE, DOCS_PNG)
    stamp(DOCS_PNG, sha)
    print(f"{DOCS_PAGE} and {DOCS_PNG} remade (page {sha[:12]})")
