"""Turn what went wrong in a run into words a business user understands (secrets masked)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from conveyor.errors import ConveyorError, ValidationFailed
from conveyor.pipelines.failures import TypeFailure, first_lines
from conveyor.secrets import mask_text

_MAX = 600


@dataclass(frozen=True)
class Explanation:
    """``message`` for people; ``detail`` is the error class and its own text."""

    message: str
    detail: str
    transient: bool = False


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


def explain(exc: BaseException, secrets: Iterable[str] = ()) -> Explanation:
    """The most specific explanation found in the chain of causes.

    Conveyor's own errors speak for themselves; anything else is put in words by the first
    failure class (of every registered type, in registry order) that recognises it."""
    from conveyor.pipelines.registry import failure_classes

    secrets = list(secrets)
    chain = list(causes(exc))
    root = _innermost(chain)
    detail = mask_text(f"{type(root).__name__}: {_first_lines(str(root))}", secrets)
    classes = failure_classes()
    for candidate in chain:
        found = _known(candidate, classes)
        if found:
            message, transient = found
            return Explanation(_clip(mask_text(message, secrets)), _clip(detail), transient)
    return Explanation(_clip(detail), _clip(detail))


def _known(exc: BaseException, classes: list[type[TypeFailure]]) -> tuple[str, bool] | None:
    if isinstance(exc, ValidationFailed):
        return f"The connector's configuration is invalid: {exc}", False
    if isinstance(exc, ConveyorError):
        return str(exc), exc.transient
    if isinstance(exc, TypeFailure):  # raised as such by a type's own code
        return str(exc), exc.transient
    for klass in classes:
        failure = klass.recognise(exc)
        if failure is not None:
            return str(failure), failure.transient
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
