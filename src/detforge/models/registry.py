"""Models by name. Each model is a plain, typed builder function registered with
:func:`register_model`; its keyword arguments are the model's options. ``build`` checks the
options a user gives against that signature before building, and ``describe`` lists them."""

from __future__ import annotations

import difflib
import inspect
import types
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

from detforge.errors import DetforgeError
from detforge.models.base import Model
from detforge.models.weights import SHIPPED

COMMON = ("imgsz", "pretrained")  # options every builder takes


@dataclass(frozen=True)
class Option:
    name: str
    type: str  # as written in the builder's signature
    default: object


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str  # detect or classify
    summary: str  # one line for `detforge models`
    builder: Callable[..., Model]
    # the model's training recipe: TrainConfig fields (``augment`` nested) that replace the
    # generic defaults when the user does not set them
    recipe: dict = field(default_factory=dict)

    def options(self) -> list[Option]:
        """The builder's keyword options, from its signature (``classes`` excluded)."""
        sig = inspect.signature(self.builder)
        hints = typing.get_type_hints(self.builder)
        return [
            Option(p.name, _type_name(hints.get(p.name, object)), p.default)
            for p in sig.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        ]


REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, task: str, summary: str, recipe: dict | None = None):
    """Decorator: register ``fn(classes, *, option=default, ...) -> Model`` as model ``name``;
    ``recipe`` holds the TrainConfig defaults that train this model well."""

    def add(fn):
        if name in REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        params = list(inspect.signature(fn).parameters.values())
        if (
            not params
            or params[0].name != "classes"
            or any(p.kind is not inspect.Parameter.KEYWORD_ONLY for p in params[1:])
        ):
            raise TypeError(f"{fn.__name__}: a builder is fn(classes, *, options...)")
        REGISTRY[name] = ModelEntry(name, task, summary, fn, dict(recipe or {}))
        return fn

    return add


def _type_name(t) -> str:
    if isinstance(t, type) and not typing.get_args(t):
        return t.__name__
    return str(t).replace("typing.", "")


def _accepts(t, value) -> bool:
    """Whether ``value`` fits the annotation ``t`` (simple types, unions, lists/tuples)."""
    origin = typing.get_origin(t)
    if t is typing.Any or t is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in typing.get_args(t))
    if t is type(None):
        return value is None
    if origin in (list, tuple) or t in (list, tuple):
        return isinstance(value, (list, tuple))
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(t, type):
        return isinstance(value, t)
    return True


RENAMED = {"tracker": "localizer"}  # old model names, accepted (with a note) until detforge 0.2


def canonical(name: str) -> str:
    """A model's name, a renamed one's new name (said once per call site, as a warning)."""
    if name in RENAMED:
        warnings.warn(
            f"model {name!r} is now called {RENAMED[name]!r}; {name!r} is accepted until "
            "detforge 0.2",
            FutureWarning,
            stacklevel=3,
        )
        return RENAMED[name]
    return name


def entry(name: str) -> ModelEntry:
    name = canonical(name)
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, list(REGISTRY), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "one of " + ", ".join(REGISTRY)
        raise DetforgeError(f"unknown model {name!r}", hint)
    return REGISTRY[name]


def check_options(name: str, options: dict) -> None:
    """Every option must be one the builder takes, of the type it declares."""
    e = entry(name)
    opts = {o.name: o for o in e.options()}
    hints = typing.get_type_hints(e.builder)
    for key, value in options.items():
        if key not in opts:
            close = difflib.get_close_matches(key, list(opts), n=1)
            raise DetforgeError(
                f"model {name!r} has no option {key!r}",
                (f"did you mean {close[0]!r}? " if close else "")
                + f"its options: {', '.join(opts)} (`detforge models` lists them)",
            )
        if not _accepts(hints.get(key, object), value):
            raise DetforgeError(
                f"model {name!r}: option {key}={value!r} must be {opts[key].type}",
                "`detforge models` lists each option with its type and default",
            )


def build(name: str, classes, **options) -> Model:
    """Build model ``name`` for ``classes``. Options: ``imgsz``, ``pretrained`` (none,
    imagenet, coco) and the model's own (see ``detforge models``); ``None`` means default."""
    e = entry(name)
    if not classes:
        raise DetforgeError("a model needs at least one class")
    options = {k: v for k, v in options.items() if v is not None}
    check_options(name, options)
    return e.builder(list(classes), **options)


def names(task: str | None = None) -> list[str]:
    return [n for n, e in REGISTRY.items() if task is None or e.task == task]


def describe() -> dict[str, dict]:
    """``{name: {task, summary, options: [{name, type, default}], recipe, shipped}}`` from the
    builders and their registrations; ``shipped`` names the weights inside the package
    (``--pretrained synthetic``), else None."""

    by_task = sorted(REGISTRY.values(), key=lambda e: e.task != "detect")  # stable
    return {
        e.name: {
            "task": e.task,
            "summary": e.summary,
            "options": [o.__dict__ for o in e.options()],
            "recipe": e.recipe,
            "shipped": SHIPPED[e.name][0] if e.name in SHIPPED else None,
        }
        for e in by_task
    }
