"""The one registry of lint rules. Each module in this package registers its rules with
``@rule(...)``; the engine calls ``registry()``, which imports every module here once, so a
new rule module needs no wiring (limits' storage back-ends register the same way).

A rule is a function ``Ctx -> Iterator[Finding]``. ``gixy`` names the gixy-ng checks that
the rule stands for: when gixy-ng also runs, its finding of such a check is dropped where
this rule reported the same file and line (``replaces`` drops them everywhere: nginxgen
decides that class on purpose, e.g. with other severities).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..tree import Ctx, Finding

RuleFn = Callable[[Ctx], Iterator[Finding]]


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    fn: RuleFn
    gixy: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()


RULES: dict[str, Rule] = {}


def rule(
    rule_id: str, name: str, *, gixy: tuple[str, ...] = (), replaces: tuple[str, ...] = ()
) -> Callable[[RuleFn], RuleFn]:
    def register(fn: RuleFn) -> RuleFn:
        RULES[rule_id] = Rule(rule_id, name, fn, gixy, replaces)
        return fn

    return register


def registry() -> dict[str, Rule]:
    """Every rule, by id (rule modules are imported on first use)."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return RULES
