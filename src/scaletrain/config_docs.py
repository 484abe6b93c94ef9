"""Render docs/config.md from the schema so the reference cannot drift from the code."""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel

from scaletrain.config import Config, ModelConfig
from scaletrain.typed_yaml import MAX_VALUES

HEADER = f"""# Config reference

Generated from `src/scaletrain/config/` by `python -m scaletrain.config_docs > docs/config.md`
(a test fails when this file is out of date). Every key can be set in YAML or overridden on the
command line as `section.key=value`. Unknown keys and out-of-range values are rejected with
the key path named.

A value is read as YAML against its key's type, in a file and in an override alike: a key that
takes words takes `off`, `32` or `yes` as written (`train.guard.nonfinite=off`,
`train.precision=32`), a list key takes a YAML list (`model.channels=[16, 32]`), numbers stay
numbers. `true`/`false` are not numbers, numbers must be finite (no `.inf`, `.nan` or `1e400`),
and counts stay below 2^31. The `data` keys that only some sources read (`path`, `name`,
`label`, `features`, `table`, `text`, `image`) are refused when set away from their default
under a source that ignores them (`shards` excepted: they describe how the shards were made). YAML aliases may expand to at most {MAX_VALUES:,} values.

An override that switches a named choice (`model.name`, `optim.name`, `optim.schedule.name`,
`loss.name`, `data.source`) keeps the file's options the new choice also takes and drops the
others with one `note:` line: `scaletrain train configs/default.yaml model.name=mlp` keeps
`model.dropout` and drops the cnn's `model.channels` and `model.head`. An option of the old
choice set by the same overrides (`model.name=mlp model.channels=[8]`) is still refused.
`scaletrain list optimizers|schedules|losses|inits` shows the options each entry reads.
"""


def render_config_reference() -> str:
    lines = [HEADER]
    for section, field in Config.model_fields.items():
        if section == "model":
            for cls in typing.get_args(typing.get_args(ModelConfig)[0]):
                name = cls.model_fields["name"].default
                lines += _section(f"model (name: {name})", "model", cls)
            continue
        lines += _section(section, section, _section_class(field.annotation))
    return "\n".join(lines).rstrip() + "\n"


def _section(title: str, prefix: str, cls: type[BaseModel]) -> list[str]:
    lines = [f"## `{title}`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    nested = []
    for key, field in cls.model_fields.items():
        annotation = field.annotation
        if _section_class(annotation) is not None:
            nested.append((f"{prefix}.{key}", _section_class(annotation)))
            continue
        kind = _type_name(annotation).replace("|", "\\|")
        default = "(required)" if field.is_required() else f"`{field.default!r}`"
        default = default.replace("|", "\\|")
        lines.append(f"| `{prefix}.{key}` | {kind} | {default} | {field.description or ''} |")
    lines.append("")
    for sub_prefix, sub_cls in nested:
        if sub_prefix.endswith(".init") and prefix == "model" and title != "model (name: mlp)":
            continue  # one init table is enough: it is the same for every model
        lines += _section(sub_prefix, sub_prefix, sub_cls)
    return lines


def _section_class(annotation) -> type[BaseModel] | None:
    """The section a field holds: `X` or an optional `X | None` (absent by default)."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _type_name(annotation) -> str:
    """A short, readable type: `list[int]`, `float | None`, `one of 'a', 'b'`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(value) for value in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(arg) for arg in args)}]"
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


if __name__ == "__main__":
    out = render_config_reference()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(out)
    else:
        sys.stdout.write(out)
