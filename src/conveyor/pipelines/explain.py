"""Turn what went wrong in a run into words a business user understands (secrets masked),
with its failure class (transient, config, data, internal) and, where known, the side
(source or destination) it concerns."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from conveyor.domain.vocabulary import FailureClass
from conveyor.errors import ConveyorError, ValidationFailed
from conveyor.pipelines.failures import TypeFailure, first_lines
from conveyor.secrets import mask_text

if TYPE_CHECKING:
    from conveyor.pipelines.contract import ConveyorType

_MAX = 600
Side = Literal["source", "destination"]
# dlt's pipeline steps: extract reads the source, normalize and load meet the destination.
_STEP_SIDE: dict[str, Side] = {
    "extract": "source",
    "normalize": "destination",
    "load": "destination",
}


@dataclass(frozen=True)
class Explanation:
    """``message`` for people; ``detail`` is the error class and its own text."""

    message: str
    detail: str
    failure_class: FailureClass = "internal"
    side: Side | None = None

    @property
    def transient(self) -> bool:
        """Whether a later attempt can succeed (only these are retried)."""
        return self.failure_class == "transient"


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (dlt nests the real cause a few levels deep)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.append(getattr(current, "exception", None))  # dlt PipelineStepFailed
        stack.append(current.__cause__)
        stack.append(current.__context__)


def explain(
    exc: BaseException,
    secrets: Iterable[str] = (),
    *,
    source: ConveyorType | None = None,
    destination: ConveyorType | None = None,
) -> Explanation:
    """The most specific explanation found in the chain of causes.

    Conveyor's own errors speak for themselves; anything else is put in words by the first
    failure class that recognises it: the run's source type's classes, then its destination
    type's, then every registered type's (in registry order). Nothing recognised is
    ``internal``. The side is the dlt step that failed when there is one, else the type
    whose class recognised the error; a data failure is the destination's."""
    from conveyor.pipelines.registry import failure_classes

    secrets = list(secrets)
    chain = list(causes(exc))
    root = _innermost(chain)
    detail = _clip(mask_text(f"{type(root).__name__}: {_first_lines(str(root))}", secrets))
    ordered: list[tuple[Side | None, type[TypeFailure]]] = []
    if source is not None:
        ordered += [("source", f) for f in source.failures]
    if destination is not None:
        ordered += [("destination", f) for f in destination.failures]
    ordered += [(None, f) for f in failure_classes()]
    step = _step_side(chain)
    for candidate in chain:
        found = _known(candidate, ordered)
        if found:
            message, klass, where = found
            if klass == "data":  # the source gave the rows; the destination refused them
                where = "destination"
            return Explanation(_clip(mask_text(message, secrets)), detail, klass, step or where)
    return Explanation(detail, detail, "internal", step)


def _known(
    exc: BaseException, ordered: list[tuple[Side | None, type[TypeFailure]]]
) -> tuple[str, FailureClass, Side | None] | None:
    if isinstance(exc, ValidationFailed):
        return f"The connector's configuration is invalid: {exc}", "config", None
    if isinstance(exc, ConveyorError):
        return str(exc), "transient" if getattr(exc, "transient", False) else "config", None
    if isinstance(exc, TypeFailure):  # raised as such by a type's own code
        return str(exc), exc.failure_class, None
    for side, klass in ordered:
        failure = klass.recognise(exc)
        if failure is not None:
            return str(failure), failure.failure_class, side
    return None


def _step_side(chain: list[BaseException]) -> Side | None:
    """The side of the dlt step that failed (``PipelineStepFailed.step``), if any."""
    for exc in chain:
        step = getattr(exc, "step", None)
        if isinstance(step, str) and type(exc).__module__.startswith("dlt"):
            return _STEP_SIDE.get(step)
    return None


def _innermost(chain: list[BaseException]) -> BaseException:
    # Prefer the deepest non-dlt-wrapper exception for the technical detail.
    for exc in reversed(chain):
        module = type(exc).__module__
        if not module.startswith(("dlt.pipeline", "dlt.extract.exceptions")):
            return exc
    return chain[0]


_first_lines = first_lines


def _clip(text: str) -> str:
    return text if len(text) <= _MAX else text[: _MAX - 1] + "…"
