"""The package index page: no link in it points into a source tree that the index does not have."""
from __future__ import annotations

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
index_page = runpy.run_path(str(ROOT / "setup.py"), run_name="setup_under_test")["index_page"]


def test_the_index_page_keeps_only_absolute_links() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"\]\((?!https?:)[^)]+\)", readme), "the README has relative links to rewrite"
    page = index_page(readme)
    assert re.findall(r"\]\((?!https?:|mailto:)[^)]+\)", page) == []


def test_links_become_text_that_stands_alone() -> None:
    text = "see [Proxies](#proxies), [docs/protocol.md](docs/protocol.md#x), [§3](docs/protocol.md) [a](https://e.org)"
    assert index_page(text) == ("see *Proxies*, docs/protocol.md (in the source distribution), "
                                "§3 (docs/protocol.md in the source distribution) [a](https://e.org)")
