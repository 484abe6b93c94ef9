"""YAML read against a pydantic schema: scalars typed by their field, aliases bounded.

YAML guesses a scalar's type from its spelling (`off` is False, `32` an int, `yes` True), so
a string field could not take `train.guard.nonfinite: off` or `train.precision=32` unquoted.
Here a scalar keeps YAML's value where the field accepts that type, and becomes the text as
written where the field takes strings but not that value. Aliases are counted before
anything is built: a 1 KB alias bomb expands to millions of values (and a 14 MB error line).
Every failure is one ``ConfigError`` line naming the file or the key.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from scaletrain.errors import ConfigError

# A whole config has about 200 values; no hand-written YAML comes near this once expanded.
MAX_VALUES = 100_000
_NONE = type(None)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser where built in


def load_value(
    text: str, annotation: Any, *, where: str, default: Any = None, file: bool = False
) -> Any:
    """One YAML document read as a value of ``annotation`` (a type, a schema class or None:
    YAML's own types); ``where`` names the file (``file=True``: with line numbers) or key."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, where=where, file=file)
        return _build(loader, node, annotation, default)
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: `2024-13-45`, 5000 digits
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"{_at(where, mark, file)}: not valid YAML ({_problem(exc)})") from None
    except RecursionError:  # the pure-Python parser (libyaml stops at depth 1000 itself)
        raise ConfigError(f"{where}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def takes_text(annotation: Any, text: str) -> bool:
    """Whether a field of this annotation takes ``text`` as a string: any text for a `str`
    field, one of its words for a `Literal` (None: a key the schema does not know)."""
    if text == "":
        return False  # YAML's null: `key:` with no value stays None
    for member in _members(annotation):
        if member is str:
            return True
        if get_origin(member) is Literal and text in get_args(member):
            return True
    return False


def field_at(schema: type[BaseModel], raw: dict, parts: list[str]) -> FieldInfo | None:
    """The schema field at a dotted path (None where there is none); ``raw`` holds the values
    read so far, which pick the member of a tagged union (``model.name``)."""
    cls: type[BaseModel] | None = schema
    node: Any = raw
    field = None
    for part in parts:
        if cls is None or part not in cls.model_fields:
            return None
        field = cls.model_fields[part]
        node = node.get(part) if isinstance(node, dict) else None
        tag = node.get("name") if isinstance(node, dict) else None
        cls = _section(field.annotation, field.default, tag=tag)
    return field


# --- building values ---------------------------------------------------------------------
def _build(loader, node: yaml.Node, annotation: Any, default: Any = None) -> Any:
    if annotation is None:
        return loader.construct_object(node, deep=True)
    if isinstance(node, yaml.ScalarNode):
        return _scalar(loader, node, annotation)
    if isinstance(node, yaml.SequenceNode):
        items = _item_types(annotation, len(node.value))
        if items is None:
            return loader.construct_object(node, deep=True)
        return [_build(loader, child, item) for child, item in zip(node.value, items, strict=True)]
    cls = _section(annotation, default, tag=_tag_of(node))
    if cls is None:
        return loader.construct_object(node, deep=True)
    loader.flatten_mapping(node)  # `<<: *defaults` merge keys
    built = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, list | dict):
            raise yaml.MarkedYAMLError(
                problem=f"a key must be a name, not a {type(key).__name__}",
                problem_mark=key_node.start_mark,
            )
        field = cls.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            built[key] = loader.construct_object(value_node, deep=True)
        else:
            built[key] = _build(loader, value_node, field.annotation, field.default)
    return built


def _scalar(loader, node: yaml.ScalarNode, annotation: Any) -> Any:
    try:
        value = loader.construct_object(node)
    except ValueError:  # a spelling YAML cannot build: `2024-13-45` as a date
        if takes_text(annotation, node.value):
            return node.value
        raise
    kinds = _kinds(annotation)
    if type(value) in kinds or object in kinds or node.style:  # quoted: a string anyway
        return value
    if takes_text(annotation, node.value):
        return node.value  # `off`, `32`, `yes` as written, for a field that takes them
    return value


def _kinds(annotation: Any) -> set[type]:
    """The Python types of scalar YAML values the annotation accepts as they are."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _kinds(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return set().union(*(_kinds(arg) for arg in get_args(annotation)))
    if origin is Literal:
        return {type(value) for value in get_args(annotation)} - {str}  # takes_text: words
    if annotation is float:
        return {float, int}
    if annotation in (int, str, bool, _NONE):
        return {annotation}
    if annotation is Any:
        return {object}
    return set()  # lists, tuples, sections: no scalar fits


def _item_types(annotation: Any, length: int) -> list[Any] | None:
    """The annotation of each item of a YAML list, or None where the field takes no list."""
    for member in _members(annotation):
        origin, args = get_origin(member), get_args(member)
        if origin is list:
            return [args[0] if args else None] * length
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return [args[0]] * length
            return [*args[:length], *[None] * (length - len(args))]
    return None


def _section(annotation: Any, default: Any, *, tag: Any) -> type[BaseModel] | None:
    """The schema a mapping is read with: the section class, or the union member named by
    the mapping's ``name`` (else the default's class)."""
    sections = [
        member
        for member in _members(annotation)
        if isinstance(member, type) and issubclass(member, BaseModel)
    ]
    if len(sections) <= 1:
        return sections[0] if sections else None
    for cls in sections:
        name = cls.model_fields.get("name")
        if name is not None and name.default == tag:
            return cls
    return type(default) if isinstance(default, BaseModel) else None


def _members(annotation: Any) -> list[Any]:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [member for arg in get_args(annotation) for member in _members(arg)]
    return [annotation]


def _tag_of(node: yaml.MappingNode) -> Any:
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == "name":
            return value_node.value if isinstance(value_node, yaml.ScalarNode) else None
    return None


# --- aliases and messages ----------------------------------------------------------------
def _check_size(root: yaml.Node, *, where: str, file: bool) -> None:
    """Count the values the document expands to (an alias counts its target again) without
    expanding it; refuse a recursive alias or more than MAX_VALUES values."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in _children(node))
            if size[key] > MAX_VALUES:
                raise ConfigError(
                    f"{where}: the YAML expands to more than {MAX_VALUES} values through "
                    "aliases (*name); write the values out instead"
                )
        elif key not in size:
            if key in on_path:
                at = _at(where, node.start_mark, file)
                raise ConfigError(f"{at}: a YAML alias refers to itself (recursive)")
            on_path.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node) if id(child) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return []


def _at(where: str, mark, file: bool) -> str:
    return f"{where}:{mark.line + 1}" if file and mark is not None else where


def _problem(exc: Exception) -> str:
    text = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
    return " ".join(str(text).split()) or type(exc).__name__
