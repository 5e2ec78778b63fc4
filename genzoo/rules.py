"""Valid values of config keys, declared beside their defaults, and the one validator.

A field states its rule in its annotation, next to its default:

    lr: Annotated[float, Range("(0, 10]")] = 2e-4
    ema_decay: Annotated[float, Range("[0, 1)")] = 0.999
    channels: Annotated[int, Range("[1, 4096]")] = 64        # tuples: every element

`typing.get_type_hints` without extras still sees plain `float` / `int`, so parsing is unchanged;
`validate(cfg)` reads the rules (with extras) and checks every resolved config: defaults, preset,
`--dataset`, `--set` and a resumed run's saved config, before anything is built or written.
Every float must be finite unless its rule's upper end is a closed `inf]`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass
from typing import Annotated, Any

from genzoo.errors import ConfigError, GenzooError

_INTERVAL = re.compile(r"^\s*([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])\s*$")


@dataclass(frozen=True)
class Range:
    """A closed / open interval in the usual notation: "[1, 4096]", "(0, 1]", "[0, inf)"."""

    text: str

    def __post_init__(self):
        if not _INTERVAL.match(self.text):
            raise ValueError(f"bad interval {self.text!r}")

    @property
    def bounds(self) -> tuple[str, float, float, str]:
        left, lo, hi, right = _INTERVAL.match(self.text).groups()
        return left, float(lo), float(hi), right

    def holds(self, value: float) -> bool:
        left, lo, hi, right = self.bounds
        if math.isnan(value):
            return False
        above = value >= lo if left == "[" else value > lo
        below = value <= hi if right == "]" else value < hi
        return above and below

    def allows_inf(self) -> bool:
        _, _, hi, right = self.bounds
        return math.isinf(hi) and right == "]"


@dataclass(frozen=True)
class NonEmpty:
    """A tuple field that must hold at least one element."""


# the rules most fields need, by name
Positive = Annotated[float, Range("(0, inf)")]
NonNegative = Annotated[float, Range("[0, inf)")]
Fraction = Annotated[float, Range("[0, 1]")]
Decay = Annotated[float, Range("[0, 1)")]  # EMA decays, Adam betas
Count = Annotated[int, Range("[1, 1e9]")]  # steps, intervals, sizes that must be at least 1
Count0 = Annotated[int, Range("[0, 1e9]")]  # the same where 0 means "off" or "none"
Multipliers = Annotated[tuple[int, ...], Range("[1, 16]"), NonEmpty()]  # width per resolution (ch_mult)


def _rule_of(hint: Any) -> Range | None:
    if typing.get_origin(hint) is Annotated:
        return next((m for m in hint.__metadata__ if isinstance(m, Range)), None)
    return None


def _numbers(value: Any) -> list:
    """The numbers a field holds: itself, or the elements of a tuple; bools are not numbers here."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    return [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]


def check_field(obj: Any, name: str, section: str) -> None:
    """Check one field of a config dataclass against its declared rule (and floats for finiteness)."""
    value = getattr(obj, name)
    hint = typing.get_type_hints(type(obj), include_extras=True).get(name)
    rule = _rule_of(hint)
    if typing.get_origin(hint) is Annotated and any(isinstance(m, NonEmpty) for m in hint.__metadata__) \
            and not value:
        raise ConfigError(f"{section}.{name}={value!r}: must hold at least one value, e.g. {section}.{name}=1,2")
    for v in _numbers(value):
        if isinstance(v, float) and not math.isfinite(v) and not (rule and rule.allows_inf() and v > 0):
            raise ConfigError(f"{section}.{name}={value!r}: must be a finite number"
                              + (f" in {rule.text}" if rule else ""))
        if rule is not None and not rule.holds(v):
            what = "every element must be" if isinstance(value, (tuple, list)) else "must be"
            raise ConfigError(f"{section}.{name}={value!r}: {what} in {rule.text}")


def check_section(obj: Any, section: str) -> None:
    """Check every field of one config dataclass."""
    for f in dataclasses.fields(obj):
        check_field(obj, f.name, section)


def validate(cfg) -> None:
    """Check every field of a resolved RunConfig, then the rules that join fields; raises ConfigError
    naming the key, the value and the rule."""
    for section in ("model", "sampler", "data", "train"):
        check_section(getattr(cfg, section), section)
    tc = cfg.train
    if tc.batch_size % tc.grad_accum:
        raise ConfigError(f"train.batch_size={tc.batch_size} must be divisible by train.grad_accum={tc.grad_accum}")
    if tc.steps == 0 and tc.minutes == 0:
        raise ConfigError("set a budget: train.steps > 0 (--steps) or train.minutes > 0 (--minutes)")
    from genzoo.datasets.captions import TEMPLATES
    if cfg.data.captions and cfg.data.dataset not in TEMPLATES:
        raise ConfigError(f"data.captions=true: captions exist for {' and '.join(TEMPLATES)}, not {cfg.data.dataset!r}")
    if cfg.data.subset:
        from genzoo.datasets import parse_subset
        try:
            parse_subset(cfg.data.dataset, cfg.data.subset)
        except GenzooError as e:
            raise ConfigError(str(e)) from None
    if cfg.data.image_size and cfg.data.image_size < 8:
        raise ConfigError(f"data.image_size={cfg.data.image_size}: must be 0 (the dataset's own) or at least 8")
