"""The lab's report: ``DIR/index.html``, rebuilt from every ``DIR/*/result.json``."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

FIELDS = ("name", "claim", "paper", "verdict", "summary", "mode", "seed", "seconds", "plots")
COLOURS = {
    "reproduced": "#1a7f37",
    "partly": "#9a6700",
    "not reproduced": "#cf222e",
    "not tested": "#59636e",
}

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       color: #1f2328; line-height: 1.45; }
section { border-top: 1px solid #d0d7de; padding: 1rem 0 2rem; }
.verdict { display: inline-block; color: white; font-weight: 600; padding: 0.15rem 0.6rem;
           border-radius: 1rem; }
dt { font-weight: 600; margin-top: 0.5rem; }
img { max-width: 100%; border: 1px solid #d0d7de; margin: 0.5rem 0; }
.meta { color: #59636e; font-size: 0.9rem; }
table { border-collapse: collapse; } td, th { padding: 0.2rem 0.8rem; text-align: left; }
"""


def records(out: Path, order: list[str]) -> list[dict[str, Any]]:
    """The result.json records under ``out``, experiments of ``order`` first, in it."""
    found = {}
    for path in sorted(out.glob("*/result.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # unreadable (a run interrupted while writing it): left out
        if not isinstance(record, dict) or any(field not in record for field in FIELDS):
            continue  # not a result of ours
        found[record["name"]] = record
    rank = {name: index for index, name in enumerate(order)}
    return sorted(found.values(), key=lambda r: (rank.get(r["name"], len(rank)), r["name"]))


def versions(record: dict[str, Any]) -> str:
    found = record.get("versions")
    if not isinstance(found, dict):
        return "versions not recorded"
    return ", ".join(f"{name} {version}" for name, version in found.items())


def section(record: dict[str, Any]) -> str:
    e = html.escape
    verdict = record["verdict"]
    images = "".join(
        f'<img src="{e(record["name"])}/{e(plot)}" alt="{e(plot)}">' for plot in record["plots"]
    )
    return f"""
<section id="{e(record["name"])}">
<h2>{e(record["name"])}
 <span class="verdict" style="background:{COLOURS.get(verdict, "#59636e")}">{e(verdict)}</span>
</h2>
<dl>
<dt>Claim</dt><dd>{e(record["claim"])}</dd>
<dt>The paper's result</dt><dd>{e(record["paper"])}</dd>
<dt>Verdict rule (fixed before the run)</dt><dd>{e(str(record.get("rule") or "not recorded"))}</dd>
<dt>Our result</dt><dd>{e(record["summary"])}</dd>
</dl>
<p class="meta">{e(str(record["mode"]))} run, seed {e(str(record["seed"]))},
{e(str(record["seconds"]))} s; {e(versions(record))}.
Numbers: <a href="{e(record["name"])}/result.json">result.json</a>.</p>
{images}
</section>"""


def build_index(out: Path, order: list[str]) -> Path:
    """Write ``out/index.html`` from the results under ``out``; returns its path."""
    found = records(out, order)
    rows = "".join(
        f'<tr><td><a href="#{html.escape(r["name"])}">{html.escape(r["name"])}</a></td>'
        f'<td style="color:{COLOURS.get(r["verdict"], "#59636e")}">'
        f"{html.escape(r['verdict'])}</td><td>{html.escape(r['mode'])}</td></tr>"
        for r in found
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>adamkit lab</title>
<style>{STYLE}</style></head><body>
<h1>adamkit lab</h1>
<p>The claims of the Adam papers, rerun with adamkit. Each section gives the claim, what the
paper reported, what we measured, and a verdict computed from the numbers.</p>
<table><tr><th>experiment</th><th>verdict</th><th>run</th></tr>{rows}</table>
{"".join(section(r) for r in found)}
</body></html>
"""
    path = out / "index.html"
    path.write_text(page)
    return path
