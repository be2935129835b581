"""pydantic's validation errors -> one ConfigError in English: each bad dotted key, its value and what is allowed,
read from the annotation (its type, `Field` bounds, `Literal` choices). `require` is how a validator checking several
fields reports a bad one in the same form."""
import types
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

_OPS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "min_length": "of length >="}
_NOUNS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list"}


class ConfigError(ValueError):
    """A params.yaml value that the pipeline cannot use; the message names the key."""


def require(model: Any, ok: Any, key: str, value: Any, rule: str) -> Any:
    """`model` if `ok`, else the error "'key' is value; rule" (a validator's check; key relative to the model)."""
    if not ok:
        raise PydanticCustomError("config", "'{key}' is {value}; {rule}", {"key": key, "value": repr(value), "rule": rule})
    return model


def _split(tp: Any) -> tuple[Any, list]:
    """Annotated[int, Field(ge=1)] -> (int, [Ge(ge=1)]): a type and its constraints."""
    meta: list = []
    while typing.get_origin(tp) is Annotated:
        tp, *extra = typing.get_args(tp)
        meta += [m for e in extra for m in getattr(e, "metadata", [e])]
    return tp, meta


def _bounds(meta: list) -> str:
    """[Gt(0), Le(1)] -> 'in (0, 1]', [Ge(1)] -> '>= 1'."""
    b = {k: getattr(m, k) for m in meta for k in _OPS if getattr(m, k, None) is not None}
    if len(b) < 2:
        return " ".join(f"{_OPS[k]} {v:g}" for k, v in b.items())
    lo, hi = b.get("gt", b.get("ge")), b.get("lt", b.get("le"))
    return f"in {'(' if 'gt' in b else '['}{lo:g}, {hi:g}{')' if 'lt' in b else ']'}"


def _choice(tp: Any) -> bool:
    return typing.get_origin(_split(tp)[0]) in (Literal, typing.Union, types.UnionType)


def _allowed(tp: Any) -> str:
    """What an annotation allows, in words: 'a, b' (its choices), 'a number in (0, 1]', 'auto or an integer >= 1'."""
    tp, meta = _split(tp)
    if typing.get_origin(tp) is Literal:
        return ", ".join(map(str, typing.get_args(tp)))
    if _choice(tp):
        return " or ".join(map(_allowed, typing.get_args(tp)))
    return f"{_NOUNS.get(typing.get_origin(tp) or tp, 'a mapping')} {_bounds(meta)}".strip()


def _message(err: dict, model: type, prefix: str) -> str:
    """One pydantic error of `model` (whose keys are `prefix.<key>`; '' for the whole params.yaml)
    -> "'dotted.key' is <value>; <what is allowed>"."""
    keys, tp, parent, loc = [prefix], model, model, list(err["loc"])
    while loc and not _choice(tp):  # follow loc through models, lists and dicts (a union member's tag ends it)
        part, bare = loc.pop(0), _split(tp)[0]
        if isinstance(bare, type) and issubclass(bare, BaseModel):
            parent, f, keys = bare, bare.model_fields.get(part), keys + [str(part)]
            tp = f and (Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation)
        elif loc[:1] == ["[key]"]:  # a bad key of a mapping: the mapping is named, the key is the value
            tp, loc = typing.get_args(bare)[0], loc[1:]
        else:  # an item of a list or a mapping
            keys = keys[:-1] + [f"{keys[-1]}[{part}]"] if isinstance(part, int) else keys + [str(part)]
            tp = typing.get_args(bare)[-1]
    key, kind, value, ctx = ".".join(filter(None, keys)), err["type"], err.get("input"), err.get("ctx", {})
    rule = ("allowed values: " if _choice(tp) else "must be ") + _allowed(tp)
    if kind == "config":  # from require, which names the key relative to the model at loc
        return f"'{'.'.join(filter(None, keys + [ctx['key']]))}' is {ctx['value']}; {ctx['rule']}"
    if kind in ("extra_forbidden", "invalid_key"):  # invalid_key: not a string
        what = "section" if parent is model and not prefix else "key"
        return f"'{key}' is not a known {what}; allowed {what}s: {', '.join(parent.model_fields)}"
    if kind == "missing":
        return f"'{key}' is missing; {rule}"
    if kind.startswith(("greater", "less")) and not _choice(tp):
        rule = "must be " + _bounds(_split(tp)[1])
    shown = f"{value!r} ({type(value).__name__})" if kind.endswith("_type") and not _choice(tp) else repr(value)
    return f"'{key or 'params.yaml'}' is {shown}; {rule}"


def config_error(e: ValidationError, model: type, prefix: str) -> ConfigError:
    """Every problem of a ValidationError of `model` (keys under `prefix`) -> one ConfigError, a line each (a
    union's members repeat one: once)."""
    return ConfigError("\n".join(dict.fromkeys(f"params: {_message(err, model, prefix)}" for err in e.errors())))
