"""mkdocs hooks (``mkdocs.yml``, ``hooks``): tutorial scripts shown without their jupytext markers.

Each tutorial page includes its script with ``--8<-- "docs/tutorials/NAME.py"`` inside a code
fence. The scripts are jupytext percent-format files (runnable, and notebooks when opened with
jupytext), so they carry a ``# ---`` header and ``# %%`` / ``# %% [markdown]`` cell markers,
which mean nothing to a reader of the page. This hook inlines each such script with the header
and the markers removed, before pymdownx.snippets would include it verbatim.
"""

from __future__ import annotations

import re
from pathlib import Path

SNIPPET = re.compile(r'^--8<-- "(docs/tutorials/[\w.-]+\.py)"$', re.M)
MARKER = re.compile(r"^# %%( \[markdown\])?[ \t]*$")


def strip_jupytext(source: str) -> str:
    """``source`` without its jupytext header (``# ---`` ... ``# ---``) and cell markers."""
    lines = source.splitlines()
    if lines and lines[0].strip() == "# ---":
        end = next((i for i in range(1, len(lines)) if lines[i].strip() == "# ---"), 0)
        lines = lines[end + 1:]
    kept = [line for line in lines if not MARKER.match(line)]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n")


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Inline every included tutorial script, jupytext markers removed."""
    root = Path(config["config_file_path"]).parent
    return SNIPPET.sub(lambda m: strip_jupytext((root / m[1]).read_text(encoding="utf-8")), markdown)
