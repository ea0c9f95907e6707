"""How a file name (or any text from the disk) is shown on one line of text: the CLI's output and the
web page both print names through `shown`."""

from __future__ import annotations

import re

# Characters a file name may hold that would split a line of text output or of the page, or reach the
# terminal as a command (ESC sequences), or hide in the page (ESC is invisible): C0/C1 controls,
# Unicode line breaks, lone surrogates.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def shown(text: str) -> str:
    """`text` for one line of text output: unprintable characters escaped as Python writes them
    ("\\n", "\\x1b"); everything else, accents and emoji included, as it is. JSON and CSV need none."""
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)
