"""The one place that maps names to classes.

Models, objectives, KL schedules and data sets each have a :class:`Registry`.
The command line, the tests and the docs enumerate them through it, so a new
entry needs one ``@REGISTRY.register("name")`` line and nothing else.
"""

from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, List, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of classes or factories.

    :param str kind: what the entries are, used in error messages.

    >>> reg = Registry("colour")
    >>> @reg.register("red")
    ... class Red:
    ...     pass
    >>> reg.get("red") is Red
    True
    >>> reg.names()
    ['red']
    >>> reg.get("blue")
    Traceback (most recent call last):
    ...
    KeyError: "unknown colour 'blue'; expected one of: red"
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"invalid {self.kind} name {name!r}")

        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            try:
                obj.registry_name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; expected one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> List[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


#: Every latent-variable model, by name (``"vae"``, ``"ppca"``, ...).
MODELS: Registry = Registry("model")


def get_model(name: str):
    """Return the model class registered under ``name``."""
    return MODELS.get(name)


def model_names() -> List[str]:
    """Names of every registered model, sorted."""
    return MODELS.names()
