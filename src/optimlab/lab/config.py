"""The user's choices — command line and config file — checked into a :class:`Selection`.

Every value is checked for its type and range here, before anything runs or is
written, and a bad one raises :class:`ConfigError` with one line naming the
setting and the value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from . import catalog, problems
from .profiles import PROFILES

__all__ = ["FILE_KEYS", "ConfigError", "Selection", "load_config_file", "make_selection"]

#: torch.manual_seed takes any 64-bit value, but the runs offset seeds by a few thousand
#: for their data streams; 2**31 keeps every offset seed valid for torch and NumPy alike
MAX_SEED = 2**31 - 1
MAX_STEPS = 1_000_000
MAX_GRID = 21


class ConfigError(ValueError):
    """A bad name, value or config file; the message is one line for the user."""


@dataclass(frozen=True)
class Selection:
    """What the user chose; ``None`` means "the profile's default"."""

    profile: str = "default"
    problems: tuple[str, ...] | None = None
    optimizers: tuple[str, ...] | None = None
    schedules: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    grid_points: int | None = None
    steps: Mapping[str, int] = field(default_factory=dict)
    cross: bool = False


def _names(kind: str, value: Any, choices: Sequence[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{kind}s must be a comma-separated list of names, got {value!r}")
    out = []
    for item in items:
        name = item.strip()
        if name not in choices:
            raise ConfigError(f"unknown {kind} {name!r}; choose from: {', '.join(choices)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError(f"no {kind} selected; choose from: {', '.join(choices)}")
    return tuple(out)


def _seed(item: Any) -> int:
    if isinstance(item, str) and item.strip().isdigit():
        item = int(item.strip())
    if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= MAX_SEED:
        raise ValueError
    return item


def _seeds(value: Any) -> tuple[int, ...]:
    items = value.split(",") if isinstance(value, str) else value
    usage = f"seeds must be integers from 0 to {MAX_SEED} like 0,1,2, got {value!r}"
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(usage)
    try:
        seeds = tuple(sorted(dict.fromkeys(_seed(s) for s in items)))
    except ValueError:
        raise ConfigError(usage) from None
    if 0 not in seeds:
        raise ConfigError("seeds must include 0 (the learning rate is tuned on seed 0)")
    return seeds


def _integer(name: str, value: Any, low: int, high: int, odd: bool = False) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not low <= value <= high
        or (odd and value % 2 == 0)
    ):
        kind = "an odd integer" if odd else "an integer"
        raise ConfigError(f"{name} must be {kind} from {low} to {high}, got {value!r}")
    return value


def _steps(value: Any, known: Sequence[str]) -> dict[str, int]:
    if isinstance(value, Mapping):
        out = {}
        for name, n in value.items():
            _names("problem", [name], known)
            out[name] = _integer(f"steps for {name}", n, 1, MAX_STEPS)
        return out
    if isinstance(value, int) and not isinstance(value, bool):
        n = _integer("steps", value, 1, MAX_STEPS)
        return {name: n for name in known}
    raise ConfigError(f"steps must be an integer or a table problem = steps, got {value!r}")


def make_selection(
    profile: Any = "default",
    problems_: Any = None,
    optimizers: Any = None,
    schedules: Any = None,
    seeds: Any = None,
    grid_points: Any = None,
    steps: Any = None,
    cross: Any = False,
) -> Selection:
    """Validate the user's choices (from the command line or a file) into a :class:`Selection`."""
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose from: {', '.join(PROFILES)}")
    if not isinstance(cross, bool):
        raise ConfigError(f"cross must be true or false, got {cross!r}")
    known = problems.names()
    where = None if problems_ is None else _names("problem", problems_, known)
    names = list(catalog.OPTIMIZERS)
    chosen = None if optimizers is None else _names("optimizer", optimizers, names)
    _check_models(chosen or (), where or PROFILES[profile].problems)
    return Selection(
        profile=profile,
        problems=where,
        optimizers=chosen,
        schedules=None
        if schedules is None
        else _names("schedule", schedules, list(catalog.SCHEDULES)),
        seeds=None if seeds is None else _seeds(seeds),
        grid_points=None
        if grid_points is None
        else _integer("grid_points", grid_points, 1, MAX_GRID, odd=True),
        steps={} if steps is None else _steps(steps, known),
        cross=cross,
    )


def _check_models(optimizers: Sequence[str], names: Sequence[str]) -> None:
    """An optimizer that stores the weights in bfloat16 needs a model on every problem."""
    for o in optimizers:
        without = [n for n in names if not problems.get(n).has_model]
        if catalog.OPTIMIZERS[o].param_dtype != "float32" and without:
            models = [n for n in problems.names() if problems.get(n).has_model]
            raise ConfigError(
                f"optimizer {o} stores a model's weights in bfloat16, and {without[0]} has no "
                f"model; choose problems among: {', '.join(models)}"
            )


#: keys a config file may hold, and the kind of value each takes (the rest: make_selection)
FILE_KEYS = ("profile", "problems", "optimizers", "schedules", "seeds", "grid_points", "steps",
             "cross", "out", "db", "gif")  # fmt: skip
_PATH_KEYS = ("out", "db")
_FLAG_KEYS = ("cross", "gif")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a .json or .toml config file into a dict of known keys; ConfigError otherwise.

    The selection keys are checked by :func:`make_selection`; the paths and flags here.
    """
    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise ConfigError(f"config file {path} must end in .json or .toml")
    try:
        text = path.read_bytes()
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text.decode())
        else:
            data = json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"bad config file {path}: {_one_line(error)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"bad config file {path}: expected a table/object of settings")
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        raise ConfigError(
            f"bad config file {path}: unknown key {unknown[0]!r}; accepted: {', '.join(FILE_KEYS)}"
        )
    for key in _PATH_KEYS:
        if key in data and (not isinstance(data[key], str) or not data[key].strip()):
            raise ConfigError(f"bad config file {path}: {key} must be a path, got {data[key]!r}")
    for key in _FLAG_KEYS:
        if key in data and not isinstance(data[key], bool):
            raise ConfigError(
                f"bad config file {path}: {key} must be true or false, got {data[key]!r}"
            )
    return data


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
