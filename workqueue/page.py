"""The run as a picture: one self-contained HTML page with an SVG timeline (report.py EVENTS --html FILE).

A row per worker on a time axis in seconds; a bar per attempt, its colour and mark saying what became of it
(done, failed and retried, killed, or taken back by the broker); the broker's down time as a band across the
rows; the makespan, the ideal greedy schedule and the lower bound as marked lines, with their ratios in words;
parked tasks and tasks not done listed beside it, with the whole text report. Hovering a bar (its SVG
<title>) names the task, its duration, the attempt, the worker and the message id.

Past MAX_BARS attempts, a bar each would make a page a browser opens slowly: each row then shows how busy its
worker was in each of up to BINS_MAX slices of the run, and the page says so. Pure: no script, no style, font
or image from anywhere else; the page is built from the Report alone, in one pass over its attempts.
"""

from __future__ import annotations

import math
from html import escape

from workqueue.report import DONE, FAILED, KILLED, TAKEN_BACK, Fairness, Report

# A bar per attempt up to this many attempts; past it, per-worker busy slices.
MAX_BARS = 5000
# Slices per row past MAX_BARS, and at most this many slices drawn on the whole page.
BINS_MAX, BINS_TOTAL = 400, 40_000
# Tasks named in the lists beside the timeline (parked, not done), at most; the rest are counted.
LISTED = 100
# Geometry, in CSS pixels: the workers' names, the plot, room on the right for the lines' labels, the lines'
# labels above the rows, the axis below them.
LABELS, PLOT, RIGHT, TOP, AXIS = 150, 960, 90, 46, 34
KINDS = {DONE: ("done", "#2e7d32", ""), FAILED: ("failed, retried later", "#c62828", "!"),
         KILLED: ("killed", "#37474f", "\u2715"), TAKEN_BACK: ("taken back by the broker", "#ef6c00", "\u21a9")}
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px; }
p.ratio { font-size: 16px; margin: 8px 0 16px; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
svg text.mark { fill: #fff; font-weight: bold; }
.lists { display: flex; gap: 32px; flex-wrap: wrap; }
.lists section { min-width: 260px; }
pre { background: #f6f6f6; padding: 12px; overflow-x: auto; }
.key span { display: inline-block; margin-right: 16px; }
.key i { display: inline-block; width: 14px; height: 10px; margin-right: 4px; }
"""


def page(report: Report, title: str, text: str | None = None) -> str:
    """The whole page, as text: HTML with the SVG timeline inline. `text`: the report's text, if made already
    (making it again would cost as much as the page on a big run)."""
    fairness = report.fairness() or Fairness(0.0, 0.0, 0.0, 0, "no task was done", False, 0.0)
    if text is None:
        text, _ = report.text()
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{escape(title)}</h1>",
             f"<p class=\"ratio\" id=\"ratio\">{escape(fairness.in_words())}</p>", key()]
    parts += Timeline(report, fairness).svg()
    parts.append(lists(report))
    parts.append(f"<h2>The report</h2><pre id=\"report\">{escape(text)}</pre></body></html>\n")
    return "\n".join(parts)


def key() -> str:
    items = "".join(f"<span><i style=\"background:{colour}\"></i>{escape(words)}{' ' + mark if mark else ''}</span>"
                    for words, colour, mark in KINDS.values())
    return (f"<p class=\"key\">{items}<span><i style=\"background:#9e9e9e\"></i>broker down</span>"
            "<span>hover a bar for its task</span></p>")


def lists(report: Report) -> str:
    run = report.run
    parked = sorted(report.parked)
    not_done = [task for task in report.missing if task not in report.parked]
    sections = []
    for heading, tasks, why in (("Parked in the dead-letter queue", parked, report.parked_reason),
                                ("Not done", not_done, lambda _task: "still on the queue, or lost")):
        if not tasks:
            continue
        items = "".join(f"<li>task {escape(run.names[task])}: {escape(why(task))}</li>" for task in tasks[:LISTED])
        more = f"<li>and {len(tasks) - LISTED} more</li>" if len(tasks) > LISTED else ""
        sections.append(f"<section><h2>{heading} ({len(tasks)})</h2><ul class=\"{heading.split()[0].lower()}\">"
                        f"{items}{more}</ul></section>")
    return f"<div class=\"lists\">{''.join(sections)}</div>"


def nice_step(span: float) -> float:
    """A tick step of 1, 2 or 5 times a power of ten, for about ten ticks over `span` seconds."""
    raw = span / 10 or 1.0
    power = 10 ** math.floor(math.log10(raw))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= raw)


class Timeline:
    """The SVG: rows, bars (or busy slices), the broker's down time, the marked lines, the axis."""

    def __init__(self, report: Report, fairness) -> None:
        self.report = report
        self.run = report.run
        self.fairness = fairness
        run = self.run
        self.attempts = [i for i, (task, kind) in enumerate(zip(run.a_task, run.a_kind))
                         if report.ours(task) or kind == KILLED]
        names = run.worker_names()
        workers = sorted({run.a_worker[i] for i in self.attempts}, key=names.__getitem__)
        self.rows = {worker: row for row, worker in enumerate(workers)}
        self.names = names
        self.row_names = [names[worker] for worker in workers]
        starts = [run.a_start[i] for i in self.attempts] + [d["down"] for d in run.downtimes]
        ends = [run.a_end[i] for i in self.attempts] + [d["up"] for d in run.downtimes]
        self.t0 = min(starts, default=0.0)
        last = max(ends, default=self.t0 + 1.0)
        if fairness.makespan:
            last = max(last, fairness.start + max(fairness.makespan, fairness.ideal, fairness.bound))
        self.span = max(last - self.t0, 1e-3)
        self.row_height = 26 if len(workers) <= 60 else max(3, 1560 // len(workers))
        self.height = TOP + self.row_height * max(len(workers), 1) + AXIS

    def x(self, seconds: float) -> float:
        return LABELS + (seconds - self.t0) / self.span * PLOT

    def svg(self) -> list[str]:
        width = LABELS + PLOT + RIGHT
        out = [f"<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{self.height}\" "
               f"viewBox=\"0 0 {width} {self.height}\" role=\"img\" aria-label=\"timeline of the run\">"]
        out += self.row_labels()
        if len(self.attempts) <= MAX_BARS:
            out += self.bars()
            note = ""
        else:
            bins = min(BINS_MAX, max(10, BINS_TOTAL // max(len(self.rows), 1)))
            out += self.slices(bins)
            note = (f"<p class=\"note\" id=\"binned\">{len(self.attempts):,} attempts: too many for a bar each (up to "
                    f"{MAX_BARS:,}), so each row shows how busy its worker was in each of {bins} slices of "
                    f"{self.span / bins:.3g} s; hover a slice for its figures.</p>")
        out += self.downtimes()
        out += self.lines()
        out += self.axis()
        out.append("</svg>")
        return ([note] if note else []) + out

    def row_labels(self) -> list[str]:
        out = []
        for worker, row in self.rows.items():
            y = TOP + row * self.row_height
            if self.row_height >= 12:
                out.append(f"<text x=\"{LABELS - 8}\" y=\"{y + self.row_height * 0.65:.1f}\" text-anchor=\"end\">"
                           f"{escape(self.names[worker])}</text>")
            if row % 2:
                out.append(f"<rect x=\"{LABELS}\" y=\"{y}\" width=\"{PLOT}\" height=\"{self.row_height}\" "
                           "fill=\"#f4f4f4\"/>")
        return out

    def bars(self) -> list[str]:
        run, out = self.run, []
        pad = max(1, self.row_height // 6)
        for i in self.attempts:
            kind, task, worker = run.a_kind[i], run.a_task[i], run.a_worker[i]
            words, colour, mark = KINDS[kind]
            start, end = run.a_start[i], run.a_end[i]
            x, y = self.x(start), TOP + self.rows[worker] * self.row_height + pad
            width, height = max(self.x(end) - x, 1.0), self.row_height - 2 * pad
            name = run.names[task]
            hover = (f"task {name} \u00b7 {end - start:.2f} s \u00b7 attempt {run.a_attempt[i] or '?'} \u00b7 "
                     f"{self.names[worker]} \u00b7 message id {run.ids[task]} \u00b7 {words}")
            out.append(f"<g class=\"attempt\" data-kind=\"{words.split(',')[0]}\" data-task=\"{escape(name)}\">"
                       f"<title>{escape(hover)}</title><rect x=\"{x:.2f}\" y=\"{y}\" width=\"{width:.2f}\" "
                       f"height=\"{height}\" fill=\"{colour}\" stroke=\"#fff\" stroke-width=\"0.5\"/>")
            label = f"{name}{mark}"
            if width >= 7 * len(label) + 4 and height >= 10:
                out.append(f"<text class=\"mark\" x=\"{x + 3:.2f}\" y=\"{y + height * 0.75:.1f}\">"
                           f"{escape(label)}</text>")
            out.append("</g>")
        return out

    def slices(self, bins: int) -> list[str]:
        """Per worker and slice of the run: the share of it busy, and with what; one rect per busy slice."""
        run = self.run
        size = self.span / bins
        busy: dict[tuple[int, int], list[float]] = {}  # (row, slice) -> seconds per kind, then attempts
        t0, rows, last_bin = self.t0, self.rows, bins - 1
        a_worker, a_kind, a_start, a_end = run.a_worker, run.a_kind, run.a_start, run.a_end
        for i in self.attempts:
            row, kind, start, end = rows[a_worker[i]], a_kind[i], a_start[i], a_end[i]
            first = int((start - t0) / size)
            last = int((end - t0) / size)
            if first == last and first < last_bin:  # most attempts: within one slice
                cell = busy.get((row, first)) or busy.setdefault((row, first), [0.0, 0.0, 0.0, 0.0, 0])
                cell[kind] += end - start
                cell[4] += 1
                continue
            for slot in range(min(first, last_bin), min(last, last_bin) + 1):
                low, high = t0 + slot * size, t0 + (slot + 1) * size
                cell = busy.setdefault((row, slot), [0.0, 0.0, 0.0, 0.0, 0])
                cell[kind] += max(0.0, min(end, high) - max(start, low))
                cell[4] += 1
        out = []
        for (row, slot), cell in busy.items():
            seconds = sum(cell[:4])
            share = min(seconds / size, 1.0)
            kind = max(range(4), key=cell.__getitem__)
            x, y = self.x(self.t0 + slot * size), TOP + row * self.row_height
            hover = (f"{self.row_names[row]}, {slot * size:.2f}-{(slot + 1) * size:.2f} s: busy "
                     f"{share:.0%}, {int(cell[4])} attempt(s), mostly {KINDS[kind][0]}")
            out.append(f"<rect class=\"slice\" x=\"{x:.2f}\" y=\"{y}\" width=\"{PLOT / bins:.2f}\" "
                       f"height=\"{self.row_height}\" fill=\"{KINDS[kind][1]}\" "
                       f"fill-opacity=\"{0.15 + 0.85 * share:.2f}\"><title>{escape(hover)}</title></rect>")
        return out

    def downtimes(self) -> list[str]:
        out = []
        for down in self.run.downtimes:
            x = self.x(down["down"])
            width = max(self.x(down["up"]) - x, 1)
            out.append(f"<rect class=\"downtime\" x=\"{x:.2f}\" y=\"{TOP - 6}\" width=\"{width:.2f}\" "
                       f"height=\"{self.height - TOP - AXIS + 12}\" fill=\"#9e9e9e\" fill-opacity=\"0.35\">"
                       f"<title>broker down {down['up'] - down['down']:.1f} s</title></rect>")
        return out

    def lines(self) -> list[str]:
        """The makespan, and when the run is judged, the ideal greedy schedule and the lower bound."""
        f = self.fairness
        marks = [("makespan", f.makespan, "#000", "")]
        if f.ideal:
            marks += [("ideal", f.ideal, "#1565c0", "6 3"), ("lower bound", f.bound, "#6a1b9a", "2 3")]
        out = []
        for index, (name, seconds, colour, dash) in enumerate(marks):
            if not seconds:
                continue
            x = self.x(f.start + seconds)  # the makespan counts from the first done attempt's start
            dashes = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f"<g class=\"line\" data-line=\"{name}\"><line x1=\"{x:.2f}\" x2=\"{x:.2f}\" y1=\"{TOP - 8}\" "
                       f"y2=\"{self.height - AXIS + 4}\" stroke=\"{colour}\" stroke-width=\"1.5\"{dashes}/>"
                       f"<text x=\"{x:.2f}\" y=\"{12 + 12 * index}\" text-anchor=\"middle\" style=\"fill:{colour}\">"
                       f"{name} {seconds:.2f} s</text></g>")
        return out

    def axis(self) -> list[str]:
        y = self.height - AXIS + 6
        out = [f"<line x1=\"{LABELS}\" x2=\"{LABELS + PLOT}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#999\"/>"]
        step = nice_step(self.span)
        ticks = int(self.span / step) + 1
        for n in range(ticks):
            x = self.x(self.t0 + n * step)
            out.append(f"<line x1=\"{x:.2f}\" x2=\"{x:.2f}\" y1=\"{y}\" y2=\"{y + 5}\" stroke=\"#999\"/>"
                       f"<text x=\"{x:.2f}\" y=\"{y + 18}\" text-anchor=\"middle\">{n * step:g} s</text>")
        return out
