"""Configuration: dataclasses, presets as plain dicts, strict dotted overrides, JSON round trip.

A run is described by a `RunConfig` with four sections:

    model    the family's own dataclass (e.g. `VAEConfig`, beside its code in models/)
    sampler  the family's sampling knobs (e.g. `steps`, `temperature`), passed to `sample()`
    data     `DataConfig` below
    train    `TrainConfig` (beside the loop in train/trainer.py)

Resolution order: dataclass defaults -> the family's preset (a plain dict) -> `--set key=value`
overrides. Unknown keys and values of the wrong type are errors, never ignored.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from genzoo.errors import ConfigError
from genzoo.rules import Range, check_field


@dataclass
class DataConfig:
    dataset: str = "mnist"
    root: str = ""  # "" = $GENZOO_DATA or ~/.cache/genzoo/data
    download: bool = False  # allow torchvision to download (opt-in only)
    image_size: Annotated[int, Range("[0, 1024]")] = 0  # 0 = the dataset's native size; else resized once in memory
    # 0 = native; 3 repeats a grey dataset (synthetic: generated channels)
    channels: Annotated[int, Range("[0, 4]")] = 0
    captions: bool = False  # each batch also carries caption tokens (Batch.text; genzoo.datasets.captions)
    # small-data fine-tuning (LoRA, full fine-tuning): keep only the images of one attribute bin, "ATTRIBUTE:BIN"
    # (e.g. thickness:thick; genzoo.datasets.attributes), in every split; "" keeps them all
    subset: str = ""
    # 0 = every training image; else the first n of a fixed permutation of the (subset's) training split. The
    # evaluation's reference set is never limited: it is the whole subset.
    limit: Annotated[int, Range("[0, 100000000]")] = 0


@dataclass
class RunConfig:
    family: str
    model: Any
    sampler: Any
    data: DataConfig = field(default_factory=DataConfig)
    train: Any = None  # train.trainer.TrainConfig (kept loose to avoid an import cycle)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# ----------------------------------------------------------------------------------------
# strict setting of dotted keys


def _parse_value(text: str, tp: Any, key: str) -> Any:
    """Parse a command-line string into the annotated type `tp` (strict)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if text.lower() in ("none", "null") and len(args) < len(typing.get_args(tp)):
            return None
        return _parse_value(text, args[0], key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if text not in choices:
            raise ConfigError(f"{key}={text!r}: must be one of {', '.join(map(str, choices))}")
        return text
    if origin is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
        return tuple(_parse_value(p.strip(), item, key) for p in parts)
    if tp is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}={text!r}: expected a boolean (true/false)")
    if tp in (int, float):
        try:
            value = float(text) if tp is float else int(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected {tp.__name__}") from None
        return value
    if tp is str:
        return text
    raise ConfigError(f"{key}: cannot set a field of type {tp} from the command line")


def _check_value(value: Any, tp: Any, key: str) -> Any:
    """Validate a Python value (from a preset dict or JSON) against the annotated type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _check_value(value, args[0], key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}={value!r}: must be one of {typing.get_args(tp)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a tuple")
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        return tuple(_check_value(v, item, key) for v in value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"{key}={value!r}: expected {tp.__name__}, got {type(value).__name__}")
    return value


def _field_types(obj: Any) -> dict[str, Any]:
    return typing.get_type_hints(type(obj))


def set_key(cfg: RunConfig, key: str, value: Any, *, from_text: bool) -> None:
    """Set `section.field` (e.g. `model.channels`) on `cfg`, strictly."""
    section, _, name = key.partition(".")
    sections = ("model", "sampler", "data", "train")
    if section not in sections or not name:
        raise ConfigError(f"unknown key {key!r}: keys look like SECTION.FIELD with SECTION in {', '.join(sections)}")
    obj = getattr(cfg, section)
    hints = _field_types(obj)
    if name not in hints:
        raise ConfigError(f"unknown key {key!r}; {section} has: {', '.join(sorted(hints))}")
    tp = hints[name]
    value = _parse_value(value, tp, key) if from_text else _check_value(value, tp, key)
    setattr(obj, name, value)
    check_field(obj, name, section)  # its declared range (genzoo.rules)


def apply_dict(cfg: RunConfig, overrides: dict[str, dict[str, Any]]) -> None:
    """Apply a nested preset dict `{"model": {...}, "train": {...}}`."""
    for section, values in overrides.items():
        if not isinstance(values, dict):
            raise ConfigError(f"preset section {section!r} must be a dict")
        for name, value in values.items():
            set_key(cfg, f"{section}.{name}", value, from_text=False)


def apply_overrides(cfg: RunConfig, items: list[str]) -> None:
    """Apply command-line overrides `["model.channels=64", "train.lr=2e-4"]`."""
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"bad override {item!r}: use --set SECTION.FIELD=VALUE, e.g. --set train.lr=2e-4")
        set_key(cfg, key.strip(), value.strip(), from_text=True)


def diff(a: RunConfig, b: RunConfig) -> list[str]:
    """Keys whose values differ between two configs, as `key: a -> b` lines."""
    da, db = a.to_dict(), b.to_dict()
    out = []
    for section in ("model", "sampler", "data", "train"):
        for k in sorted(set(da[section]) | set(db[section])):
            if da[section].get(k) != db[section].get(k):
                out.append(f"{section}.{k}: {da[section].get(k)!r} -> {db[section].get(k)!r}")
    if da["family"] != db["family"]:
        out.insert(0, f"family: {da['family']!r} -> {db['family']!r}")
    return out
