"""The pass contract: `Pass.run(graph) -> PassResult(graph, changed)`.

Two kinds of pass share it:

* a plain `Pass` does one whole-graph job (dead-node removal, constant folding);
* a `RewritePass` is declarative: `match` proposes candidates, `check` returns the
  *reason* a candidate cannot be rewritten (or None when it can), `rewrite` replaces it.
  The reasons are kept so `--explain` can tell a user why a fusion did not happen.

Passes work on the in-memory IR only; protobuf stays at the I/O boundary.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from edgekiln.compiler.graph import Graph


@dataclass
class PassResult:
    """What a pass did.  `changed` must be True exactly when the graph was modified."""

    graph: Graph
    changed: bool
    applied: list[str] = field(default_factory=list)
    not_applied: list[str] = field(default_factory=list)


class Pass(abc.ABC):
    """One transformation of the graph.  Subclasses document their math in the docstring."""

    name: ClassVar[str]

    @abc.abstractmethod
    def run(self, graph: Graph) -> PassResult: ...

    def __repr__(self) -> str:
        return self.name


Match = TypeVar("Match")


class NodeRewriteFailed(Exception):
    """Raised inside a pass when a rewrite breaks on one node; the manager names it."""

    def __init__(self, node_name: str, message: str) -> None:
        super().__init__(message)
        self.node_name = node_name


class RewritePass(Pass, Generic[Match]):
    """A pass made of `match` / `check` / `rewrite`, applied to every candidate once per run."""

    @abc.abstractmethod
    def match(self, graph: Graph) -> Iterable[Match]:
        """Candidates, in graph order.  Cheap and permissive: `check` does the vetting."""

    @abc.abstractmethod
    def check(self, graph: Graph, match: Match) -> str | None:
        """None when `match` can be rewritten, else the reason it cannot."""

    @abc.abstractmethod
    def rewrite(self, graph: Graph, match: Match) -> str:
        """Rewrite `match` in place and return a one-line description of what was done."""

    def describe(self, match: Match) -> str:
        """How a candidate is named in explanations (a node name by default)."""
        return getattr(match, "name", None) or repr(match)

    def run(self, graph: Graph) -> PassResult:
        result = PassResult(graph, changed=False)
        for match in list(self.match(graph)):
            reason = self.check(graph, match)
            if reason is not None:
                result.not_applied.append(f"{self.describe(match)}: {reason}")
                continue
            try:
                result.applied.append(self.rewrite(graph, match))
            except NodeRewriteFailed:
                raise
            except Exception as exc:  # noqa: BLE001 - re-raised with the node named
                raise NodeRewriteFailed(self.describe(match), f"{type(exc).__name__}: {exc}") from exc
            result.changed = True
        return result


def node_label(node: Any) -> str:
    """`name (OpType)`, the way every message names a node."""
    return f"{node.name or '<unnamed>'} ({node.op_type})"
