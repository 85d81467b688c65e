"""``did you mean ...?``: the nearest known name to a mistyped one (a setting, a keyword)."""
from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["did_you_mean"]


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean NAME?)`` for the closest of ``known``, or ``""`` when none is close.

    The cutoff is difflib's usual 0.6: ``max_worker`` finds ``max_workers``, ``sever_host`` finds
    ``server_host``; an unrelated name finds nothing rather than a guess.
    """
    match = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {match[0]}?)" if match else ""
