"""A user's own model and in-memory data for an ensemble (Python API only): K members need K
modules, so the model comes as a factory (a callable returning a fresh `nn.Module` per call),
and every member trains on the same data dict, in this process (a factory cannot be sent to
`--nproc` worker processes reliably: lambdas and local classes do not pickle)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from scaletrain.config import Config
from scaletrain.config.models import UserModelConfig
from scaletrain.errors import UserError


@dataclass
class UserParts:
    model_factory: Callable[[], nn.Module] | None
    data: dict | None
    _made: weakref.WeakSet = field(default_factory=weakref.WeakSet, repr=False)

    def new_model(self) -> nn.Module | None:
        """A fresh module from the factory (None: the config's model), checked to be new."""
        if self.model_factory is None:
            return None
        model = self.model_factory()
        if not isinstance(model, nn.Module):
            raise UserError(
                f"model: the factory returned a {type(model).__name__}; it must return a fresh "
                "torch nn.Module on each call"
            )
        if model in self._made:  # members sharing one module would share their weights
            raise UserError(
                f"model: the factory returned the same {type(model).__name__} twice; each "
                "member needs its own module (model=lambda: MyNet(), not model=lambda: net)"
            )
        self._made.add(model)
        return model

    def apply_to(self, cfg: Config) -> Config:
        """`cfg` recording them, as `api.train` records a user module and data."""
        update = {}
        if self.model_factory is not None:
            probe = self.new_model()  # the class name the members' configs record
            update["model"] = UserModelConfig(class_name=type(probe).__qualname__)
        if self.data is not None:
            update["data"] = cfg.data.model_copy(update={"source": "tensors"})
        return cfg.model_copy(update=update)


def user_parts(model, data: dict | None, *, nproc: int) -> UserParts | None:
    """The user's factory and data checked for an ensemble (None: neither was given)."""
    if model is None and data is None:
        return None
    if isinstance(model, nn.Module):
        raise UserError(
            f"model: an ensemble trains one module per member; pass a factory that returns a "
            f"fresh one, e.g. model=lambda: {type(model).__name__}(...), not an instance"
        )
    if model is not None and not callable(model):
        raise UserError(f"model: expected a callable returning an nn.Module, got {model!r:.60}")
    if nproc > 1:
        raise UserError(
            f"nproc: {nproc} worker processes cannot receive a user model factory or data; "
            "members with them train in this process (nproc=1)"
        )
    return UserParts(model, data)
