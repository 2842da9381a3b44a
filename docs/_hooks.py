"""mkdocs hooks (listed in mkdocs.yml).

The performance page shows the benchmark table from `benchmarks/RESULTS.md`, read at
build time so the site never goes stale: the marker line `<!-- benchmark-results -->`
is replaced by that file's contents (its title dropped, its headings moved one level
down). Until the benchmarks have been run, a note says how to produce them.
"""

from __future__ import annotations

import pathlib
import re

MARKER = "<!-- benchmark-results -->"
RESULTS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "RESULTS.md"

MISSING = """!!! note "No results yet"
    `benchmarks/RESULTS.md` has not been written on this checkout. Run `make bench`
    to measure this machine.
"""


def benchmark_results() -> str:
    if not RESULTS.is_file():
        return MISSING
    text = RESULTS.read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]  # the page has its own title
    body = "\n".join(lines)
    body = re.sub(r"^(#{2,5}) ", r"#\1 ", body, flags=re.M)
    # Links relative to benchmarks/ would point nowhere from the site: name the file.
    body = re.sub(r"\[([^\]]+)\]\((?!https?://|#)([^)]+)\)", r"\1 (`benchmarks/\2`)", body)
    return body


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, benchmark_results())
    return markdown
