"""Typed conversion that says where the input is wrong.

`convert(data, T)` is `msgspec.convert` that raises `InvalidInput` whose `field` is the dotted path of the
first problem (`filters.domain[0]`, `retrieval.topk`, `[3].type`). msgspec's ValidationError carries its location
only inside the message text, so the location is found structurally instead: the value is walked along the
type (struct fields, list items, dict values, the union member the value's shape selects), converting each
part on its own until the smallest failing part is found; its own message has no location left to strip.
Used for HTTP request bodies and for the settings, so both name a bad field the same way.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Annotated, TypeVar, Union

import msgspec

from rag.errors import InvalidInput

T = TypeVar("T")
Path = tuple[str | int, ...]


def convert(data: Any, typ: type[T], *, strict: bool = True, error: type[InvalidInput] = InvalidInput,
            at: Path = ()) -> T:
    """`data` as a `typ`; `error` naming the field otherwise (`at`: where `data` itself sits)."""
    try:
        return msgspec.convert(data, typ, strict=strict)
    except msgspec.ValidationError as e:
        path, message = locate(data, typ, at, strict=strict)
        where = dotted(path)
        raise error(f"{where}: {message}" if where else message, field=where or None) from e


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def locate(value: Any, typ: Any, path: Path = (), *, strict: bool = True) -> tuple[Path, str]:
    """(path, message) of the first part of `value` that does not convert to `typ`."""
    base = _unannotated(typ)
    members = union_members(base)
    if members is not None:
        shaped = [m for m in members if _shape_fits(value, _unannotated(m))]
        if len(shaped) == 1:
            return locate(value, shaped[0], path, strict=strict)
        return path, _message(value, typ, strict)
    if isinstance(value, dict) and isinstance(base, type) and issubclass(base, msgspec.Struct):
        fields = {f.encode_name: f for f in msgspec.structs.fields(base)}
        if base.__struct_config__.forbid_unknown_fields:
            for key in value:
                if key not in fields:
                    return (*path, key), "unknown field"
        for name, f in fields.items():
            if name not in value:
                if f.required:
                    return (*path, name), "required field missing"
                continue
            if _fails(value[name], f.type, strict):
                return locate(value[name], f.type, (*path, name), strict=strict)
    origin = typing.get_origin(base)
    args = typing.get_args(base)
    if isinstance(value, list) and origin in (list, set, frozenset) and args:
        for i, item in enumerate(value):
            if _fails(item, args[0], strict):
                return locate(item, args[0], (*path, i), strict=strict)
    if isinstance(value, list) and origin is tuple and args and args[-1] is not Ellipsis and len(args) == len(value):
        for i, (item, t) in enumerate(zip(value, args)):
            if _fails(item, t, strict):
                return locate(item, t, (*path, i), strict=strict)
    if isinstance(value, dict) and origin is dict and len(args) == 2:
        for key, item in value.items():
            if _fails(item, args[1], strict):
                return locate(item, args[1], (*path, str(key)), strict=strict)
    return path, _message(value, typ, strict)


def _unannotated(typ: Any) -> Any:
    while typing.get_origin(typ) is Annotated:
        typ = typing.get_args(typ)[0]
    return typ


def union_members(typ: Any) -> tuple | None:
    """The members of a union other than None and UNSET (None when `typ` is not a union)."""
    if typing.get_origin(typ) in (Union, types.UnionType):
        return tuple(m for m in typing.get_args(typ) if m not in (type(None), msgspec.UnsetType))
    return None


def is_container(typ: Any) -> bool:
    """Whether values of `typ` are JSON objects or arrays (a struct, dict, list, tuple or set; or a union of one)."""
    members = union_members(_unannotated(typ)) or (typ,)
    return any(not _shape_fits(0, _unannotated(m)) for m in members)


def _shape_fits(value: Any, typ: Any) -> bool:
    """Whether `value` has the JSON shape of `typ` (object, array or scalar): the member a value selects."""
    origin = typing.get_origin(typ) or typ
    if isinstance(value, dict):
        return origin is dict or (isinstance(origin, type) and issubclass(origin, msgspec.Struct))
    if isinstance(value, list):
        return origin in (list, tuple, set, frozenset)
    return not (origin in (dict, list, tuple, set, frozenset)
                or (isinstance(origin, type) and issubclass(origin, msgspec.Struct)))


def _fails(value: Any, typ: Any, strict: bool) -> bool:
    try:
        msgspec.convert(value, typ, strict=strict)
    except msgspec.ValidationError:
        return True
    return False


def _message(value: Any, typ: Any, strict: bool) -> str:
    try:
        msgspec.convert(value, typ, strict=strict)
    except msgspec.ValidationError as e:
        return str(e)
    return "invalid value"
