"""Functions and classes of a module that imports nothing but ``sys``: what a
spawned child has loaded when it runs one of them is what pynisher loaded.
test_pickling.py runs them."""

import sys


def loaded_modules(*ignored: object) -> list[str]:
    return sorted(sys.modules)


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))


class PointError(Exception):
    pass


def make_point(x: int, y: int) -> Point:
    return Point(x, y)


def refuse_point(point: Point) -> None:
    raise PointError(point)


class Count(int):
    pass


def type_names(*args: object, **kwargs: object) -> list[str]:
    return [type(a).__name__ for a in args] + [f"{k}={type(v).__name__}" for k, v in kwargs.items()]


def is_same(x: object, y: object) -> bool:
    return x is y


def echo(value: object) -> object:
    return value
