"""`scaletrain list`: the registries, with each entry's own options and their defaults."""

from __future__ import annotations

from rich.table import Table

from scaletrain import choices
from scaletrain import config as schema


def catalog_table(kind: str) -> Table:
    rows = _ROWS[kind]()
    table = Table(title=f"scaletrain {kind}", show_lines=False)
    table.add_column("name", style="bold")
    table.add_column("options (defaults)")
    for name, options in rows:
        table.add_row(name, options)
    return table


def _fields(cls, skip=("name", "init"), only: tuple[str, ...] | None = None) -> str:
    """`key=default, ...` of a schema class: all its options, or `only` those an entry reads."""
    keys = [key for key in cls.model_fields if key not in skip and (only is None or key in only)]
    return ", ".join(f"{key}={cls.model_fields[key].default!r}" for key in keys) or "(none)"


def _models():
    from scaletrain.models import MODELS

    return [(name, _fields(entry.config_class)) for name, entry in sorted(MODELS.items())]


def _datasets():
    from scaletrain.data import DATASETS, SOURCES

    rows = [(name, "data.source=builtin, data.name=" + name) for name in sorted(DATASETS)]
    rows += [(name, "data.source=" + name + ", data.path=...") for name in sorted(SOURCES)]
    return rows


def _optimizers():
    from scaletrain.optim import OPTIMIZERS

    return [
        (name, _fields(schema.OptimConfig, only=choices.OPTIMIZER_OPTIONS[name]))
        for name in sorted(OPTIMIZERS)
    ]


def _schedules():
    from scaletrain.optim import SCHEDULES

    return [
        (name, _fields(schema.ScheduleConfig, only=choices.SCHEDULE_OPTIONS[name]))
        for name in sorted(SCHEDULES)
    ]


def _losses():
    from scaletrain.optim import LOSSES

    return [
        (name, _fields(schema.LossConfig, only=choices.LOSS_OPTIONS[name]))
        for name in sorted(LOSSES)
    ]


def _inits():
    from scaletrain.models import INITS

    return [
        (name, _fields(schema.InitConfig, only=choices.INIT_OPTIONS[name]))
        for name in sorted(INITS)
    ]


_ROWS = {
    "models": _models,
    "datasets": _datasets,
    "optimizers": _optimizers,
    "schedules": _schedules,
    "losses": _losses,
    "inits": _inits,
}
