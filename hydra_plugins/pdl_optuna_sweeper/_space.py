"""The search space: Hydra sweep overrides read as Optuna distributions, and back to overrides.

| override                          | distribution                                  |
|-----------------------------------|-----------------------------------------------|
| `choice(a, b)`, `a,b`             | CategoricalDistribution([a, b])               |
| `shuffle(range(...))`             | CategoricalDistribution(the range's values)   |
| `range(1, 5)`, `range(0, 1, 0.25)`| IntDistribution(1, 4) / FloatDistribution(0, 0.75, step=0.25) |
| `interval(a, b)`                  | FloatDistribution(a, b)                       |
| `int(interval(a, b))`             | IntDistribution(a, b)                         |
| `tag(log, interval(a, b))`        | FloatDistribution(a, b, log=True)             |
| `tag(log, int(interval(a, b)))`   | IntDistribution(a, b, log=True)               |

`range` is Hydra's range, as in the basic sweeper: the stop value is not part of it. (Hydra's
own Optuna sweeper included it for the samplers and left it out for the grid.) An override
that sweeps nothing (`key=5`) is a fixed parameter: every trial gets it, the study does not
search it. Imported by the sweeper only when a sweep starts (Hydra's plugin scan skips
modules whose name starts with an underscore).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

_PLAIN = (str, int, float, bool, type(None))


def distribution(override: Override) -> BaseDistribution | str:
    """The Optuna distribution of one sweep override, or the value of a fixed one (a string)."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    key, value = override.get_key_element(), override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        choices: list[Any] = list(override.sweep_iterator())
        bad = [c for c in choices if not isinstance(c, _PLAIN)]
        if bad:
            raise ValueError(f"{key}: a choice must be a str, number, bool or null, not {bad[0]!r}")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        values: list[Any] = list(override.sweep_iterator())
        if not values:
            raise ValueError(f"{key}: {override.get_value_element_as_str()} is empty")
        low, high, step = min(values), max(values), abs(value.step)
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(int(low), int(high), step=int(step))
        return FloatDistribution(float(low), float(high), step=float(step) if high > low else None)
    if isinstance(value, IntervalSweep):
        assert value.start is not None and value.end is not None
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ValueError(
        f"{key}: {override.get_value_element_as_str()} cannot be searched by the Optuna sweeper; "
        "use choice(...), range(...) or interval(...)"
    )


def search_space(lines: Sequence[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(distributions, fixed values) of override lines; a fixed value of a key wins over a search.

    A fixed value is the override's value as a string (`key=5` -> "5", `~key` -> "null").
    """
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(lines)):
        key = override.get_key_element()
        d = distribution(override)
        if isinstance(d, BaseDistribution):
            space[key] = d
        else:
            fixed[key] = d
    for key in fixed:
        space.pop(key, None)
    return space, fixed


def grid(space: dict[str, BaseDistribution]) -> dict[str, list[Any]]:
    """The grid sampler's search space: every value of each (discrete) distribution."""
    out: dict[str, list[Any]] = {}
    for key, d in space.items():
        if isinstance(d, CategoricalDistribution):
            out[key] = list(d.choices)
        elif isinstance(d, IntDistribution) and not d.log:
            out[key] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, FloatDistribution) and d.step is not None:
            n = round((d.high - d.low) / d.step)
            out[key] = [d.low + i * d.step for i in range(n + 1)]
        else:
            raise ValueError(
                f"{key}: the grid sampler needs a discrete search space (choice(...) or range(...)), "
                "not an interval"
            )
    return out


def grid_size(space: dict[str, list[Any]]) -> int:
    return math.prod(len(v) for v in space.values())


_parser = OverridesParser.create()


def fixed_line(key: str, value: str) -> str:
    """The override line of a fixed parameter (`~key` deletes, whatever its value)."""
    return key if key.startswith("~") and value == "null" else f"{key}={value}"


def override_line(key: str, value: Any) -> str:
    """`key=value` as Hydra reads it back: the same value and type (strings quoted if need be)."""
    if value is None:
        return f"{key}=null"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if not isinstance(value, str):
        return f"{key}={value!r}"
    try:
        plain = _parser.parse_override(f"{key}={value}")
        if not plain.is_sweep_override() and plain.value() == value:
            return f"{key}={value}"
    except Exception:  # not a plain value: quote it
        pass
    return f"{key}={quote(value)}"


def quote(s: str) -> str:
    """A Hydra quoted string: backslashes before a quote or the end are doubled, quotes escaped."""
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), s) + "'"
