"""Any error as one readable line: what the console scripts print."""

from __future__ import annotations

import re

from ..errors import PdlError

_NOISE = re.compile(r"^\s*(full_key|reference_type|object_type|msg)\b.*$")


def one_line(e: BaseException) -> str:
    """Squash an exception (and its causes) into one readable line.

    Our own errors (errors.PdlError: ConfigError, DataError, CheckpointError, ...) already
    are one line: when one is in the chain, it alone is the message, whatever Hydra wrapped
    it in (a signal's Interrupted excepted: what it interrupted says more).
    """
    chain: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    ours = [x for x in chain if isinstance(x, PdlError) and not hasattr(x, "signum")]
    if ours:
        chain = [ours[-1]]
    parts: list[str] = []
    for x in chain:
        text = str(x).split("Config search path:")[0]
        lines = [ln.strip() for ln in text.splitlines()]
        lines = [
            ln
            for ln in lines
            if ln
            and not _NOISE.match(ln)
            and "$VALUE" not in ln
            and not ln.startswith("Set the environment variable HYDRA_FULL_ERROR")
        ]
        text = " ".join(lines).replace("\t", " ")
        text = re.sub(
            r"\s*Available options in '(\w+)':\s*(.*)",
            lambda m: f"; available options in '{m.group(1)}': " + ", ".join(m.group(2).split()),
            text,
        )
        if text and not any(text in p for p in parts):
            parts.append(text)
    msg = ": ".join(parts) or type(chain[0]).__name__
    return msg if len(msg) <= 400 else msg[:397] + "..."
