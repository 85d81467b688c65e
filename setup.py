"""The package index page: README.md with its links into the source tree made plain text.

All other metadata is in setup.cfg. A package index shows the description on its own, where a
relative link (``docs/protocol.md``, ``#proxies``) leads nowhere: a link to a section becomes the
section's name in italics, a link to a file names the file as part of the source distribution
(the sdist ships docs/, examples/, benchmarks/ and tests/, see MANIFEST.in).
"""
from __future__ import annotations

import re
from pathlib import Path

#: A Markdown link whose target is neither an address nor a mail link.
_RELATIVE_LINK = re.compile(r"\[([^\]]+)\]\((?!https?:|mailto:)([^)\s]+)\)")


def index_page(readme: str) -> str:
    """Return ``readme`` with every relative link replaced by text that stands on its own."""
    def plain(match: re.Match) -> str:
        label, target = match.groups()
        path = target.split("#", 1)[0]
        if not path:
            return f"*{label}*"
        if path in label:
            return f"{label} (in the source distribution)"
        return f"{label} ({path} in the source distribution)"
    return _RELATIVE_LINK.sub(plain, readme)


if __name__ == "__main__":
    from setuptools import setup  # here, so that the tests can read index_page without setuptools

    setup(long_description=index_page(Path(__file__).with_name("README.md").read_text(encoding="utf-8")))
