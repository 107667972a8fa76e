"""Text read from a file, made safe for the terminal: one place that every reporter goes through.

Names, metadata values and messages that quote them come from untrusted files. Rich would read ``[...]`` in
a plain string as markup (``[/x]`` crashes, ``[link=...]`` renders a link) and ``:name:`` as an emoji, and
a terminal obeys the escape sequences a name may hold. :func:`clean` spells out every control character
(C0, DEL, C1, the bidirectional overrides, lone surrogates from undecodable bytes) as ``\\xNN``/``\\uNNNN``;
:func:`safe` wraps the result in a rich :class:`~rich.text.Text`, which rich never parses for markup or
emoji. Reporters pass names as ``safe(name)``, never as a ``str`` cell or a markup string.
"""

from __future__ import annotations

import re
from typing import Any

from rich.text import Text

# C0 controls (tab and newline included: a name is one line), DEL, C1 controls, the bidi embeddings,
# overrides and isolates, line/paragraph separators, and surrogates (a str decoded with surrogateescape).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _spell(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: Any) -> str:
    """``text`` as a one-line string with every control character spelled out (``"\\x1b[31m"``)."""
    return _UNSAFE.sub(_spell, str(text))


def safe(text: Any, style: str = "") -> Text:
    """A rich :class:`Text` of :func:`clean` ``(text)``: printed as is, never read as markup or emoji."""
    return Text(clean(text), style=style)
