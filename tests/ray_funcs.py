"""What the Ray test runs on its workers (they import this module: the test
puts this folder on their code search path). The limited calls themselves
run functions of remote_funcs.py."""

from __future__ import annotations

from typing import Any

import ray
from remote_funcs import calls

from pynisher import Outcome, Pynisher


@ray.remote
def evaluate(limited: Pynisher[..., Any], args: tuple[Any, ...]) -> Outcome[Any]:
    return limited.run(*args)


@ray.remote
def call(limited: Pynisher[..., Any], args: tuple[Any, ...]) -> Any:
    return limited(*args)


@ray.remote
class Evaluator:
    """An actor that builds its limited calls itself, once per context, and
    runs them."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[Pynisher[..., Any], tuple[Any, ...]]]] = {}

    def _call(self, context: str, index: int) -> tuple[Pynisher[..., Any], tuple[Any, ...]]:
        if context not in self.calls:
            self.calls[context] = calls(context)
        return self.calls[context][index]

    def outcome(self, context: str, index: int) -> Outcome[Any]:
        limited, args = self._call(context, index)
        return limited.run(*args)

    def call(self, context: str, index: int) -> Any:
        limited, args = self._call(context, index)
        return limited(*args)
