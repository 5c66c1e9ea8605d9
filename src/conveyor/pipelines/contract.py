"""The contract of a source or destination type: everything Conveyor knows about a type.

One class per type (in the spirit of dlt's destination factories), declared in the type's
own module and listed in ``conveyor.pipelines.registry`` — or, for a third-party type, in a
package's ``conveyor.types`` entry point. Nothing outside the type modules branches on a
type's name: the web forms, deployment files, the runner and the error messages read this.

A type declares:

- ``config_model``: its pydantic configuration (``TypeConfig``), whose ``CONNECTION_FIELDS``
  say where it connects (changing one needs the secrets again; an override may never set
  one) and whose ``PATH_FIELDS`` hold local paths (confined to the allowed roots, relative
  to a deployment file's directory);
- ``capabilities``: what it can do (merge, incremental, file transfer, direct copy, where
  its data lands);
- ``copy_form``: the "what to copy" inputs the connector form shows (sources);
- ``failures``: the failure classes (terminal or transient) it turns library errors into;
- ``build`` / ``check`` / ``discover``, each ``(config, context)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from conveyor.errors import FieldProblem, ValidationFailed
from conveyor.pipelines.config import CopyOptions, TypeConfig
from conveyor.pipelines.failures import TypeFailure
from conveyor.secrets import secret_values

if TYPE_CHECKING:
    from conveyor.settings import Settings

Kind = Literal["source", "destination"]
Lands = Literal["", "tables", "files", "endpoint"]


@dataclass(frozen=True)
class Capabilities:
    """What a type can do; the runner, the forms and the contract test read these."""

    merge: bool = False  # rows updated in place by key (primary_key → merge)
    incremental: bool = False  # only what is new is read (cursor column) / loaded again
    file_transfer: bool = False  # files copied as they are (hands them over / takes them)
    direct_copy: bool = False  # whole tables database to database, without dlt
    lands_in: Lands = ""  # destinations: tables (a database), files, or an endpoint


@dataclass(frozen=True)
class CopyField:
    """One "what to copy" input of the connector form, stored in the source override."""

    name: str  # the config model's field, and the form input's name
    label: str
    help: str = ""
    placeholder: str = ""
    many: bool = False  # comma-separated names → a list (unchanged names keep their settings)
    multiline: bool = False
    # Fields with a choice are alternatives (radio buttons): only the chosen one is saved.
    choice: str = ""
    choice_label: str = ""
    discover: str = ""  # a button that lists names to pick from (its label)
    # Discovered items are tables with columns: each picked one gets its own columns to
    # copy, write mode, primary key and cursor (``{"name", "columns", ...}`` list items).
    per_table: bool = False


@dataclass(frozen=True)
class Landing:
    """Where a connector's data lands, for its pages: ``where`` in words, the ``places``
    (schema-qualified tables, folders or URLs), a copyable ``query`` that reads it (never
    a password in it) and a ``note`` (e.g. what a staging schema is)."""

    where: str
    places: tuple[str, ...] = ()
    query: str = ""
    note: str = ""


@dataclass(frozen=True)
class TypeContext:
    """What a type's ``build``, ``check`` and ``discover`` get besides the config."""

    settings: Settings
    connector_id: int | None = None  # None outside a run (check, discover)
    # The connector's state key (``Connector.state_key``): new on create and on reset.
    state_key: str | None = None

    @property
    def state_name(self) -> str:
        """Names state a run keeps outside Conveyor's database (a transfer's manifest):
        ``connector_<id>_<state key>``, so no other connector, nor this one before a
        reset, shares it; ``connector_<id>`` for a connector from before state keys."""
        base = f"connector_{self.connector_id or 0}"
        return f"{base}_{self.state_key}" if self.state_key else base

    def dataset(self, named: str | None) -> str:
        """The dataset (schema) to load into: the configured one or the connector's own."""
        from conveyor.pipelines.target import default_dataset

        return named or default_dataset(self.connector_id or 0)


class ConveyorType:
    """Base of every source and destination type (see the module docstring)."""

    kind: ClassVar[Kind]
    name: ClassVar[str]
    title: ClassVar[str]
    config_model: ClassVar[type[TypeConfig]]
    capabilities: ClassVar[Capabilities] = Capabilities()
    failures: ClassVar[tuple[type[TypeFailure], ...]] = ()
    copy_form: ClassVar[tuple[CopyField, ...]] = ()
    # Config fields set per connector (its override), beyond the copy form's and the copy
    # options' own: they are left out of the source's form.
    extra_copy_fields: ClassVar[frozenset[str]] = frozenset()

    def __repr__(self) -> str:
        return f"<{self.kind} type {self.name!r}>"

    # --- declared by the config model ---------------------------------------------------

    @property
    def module(self) -> str:
        """Where the type's code lives."""
        return type(self).__module__

    @property
    def secret_fields(self) -> frozenset[str]:
        return self.config_model.secret_fields()

    @property
    def connection_fields(self) -> frozenset[str]:
        """Fields that say where the type connects (see ``TypeConfig``)."""
        return self.config_model.connection_fields()

    @property
    def path_fields(self) -> frozenset[str]:
        """Fields holding a local filesystem path."""
        return self.config_model.path_fields()

    def fixed_in(self, override: dict[str, Any], loc: str) -> list[FieldProblem]:
        """A problem for each field of a connector's ``override`` that says where the type
        connects: a connector may change what is copied, never where its endpoint connects
        (the endpoint's stored secrets go only to the target they were stored with)."""
        reason = (
            f"says where the {self.kind} connects, which only the {self.kind} itself sets "
            f"(a connector may change what is copied, not where its {self.kind} connects)"
        )
        return [
            FieldProblem(f"{loc}.{name}", reason)
            for name in sorted(set(override) & self.connection_fields)
        ]

    @property
    def copy_fields(self) -> frozenset[str]:
        """Fields that belong to a connector ("what to copy"), not to the endpoint."""
        names = {f.name for f in self.copy_form} | set(self.extra_copy_fields)
        if issubclass(self.config_model, CopyOptions):
            names |= set(CopyOptions.model_fields)
        return frozenset(names)

    def json_schema(self) -> dict[str, Any]:
        return self.config_model.model_json_schema(by_alias=True)

    # --- behaviour ------------------------------------------------------------------------

    def build(self, config: Any, context: TypeContext) -> Any:
        """Sources: dlt resources (or a dlt source). Destinations: a ``DltTarget``."""
        raise NotImplementedError

    def check(self, config: Any, context: TypeContext) -> str:
        """Try the connection (destinations: and write permission); a line saying what worked."""
        raise NotImplementedError

    def discover(self, config: Any, context: TypeContext) -> dict[str, Any]:
        """What there is to copy (tables, files, resources)."""
        raise ValidationFailed.field("type", f"a {self.name} {self.kind} has nothing to discover")

    @property
    def discovers(self) -> bool:
        return type(self).discover is not ConveyorType.discover

    def local_paths(self, config: Any, settings: Settings) -> list[tuple[str, str]]:
        """(field, path) of every local path the config makes a connector touch."""
        out = []
        for name in sorted(self.path_fields):
            value = getattr(config, name, None)
            if isinstance(value, str) and value:
                out.append((name, value))
        return out

    def confine(self, config: Any, settings: Settings, *, loc: str = "config") -> None:
        """Refuse (ValidationFailed, every bad field) local paths outside the allowed roots."""
        from conveyor.pipelines import paths

        paths.confine_paths(self.local_paths(config, settings), settings=settings, loc=loc)

    def secret_values(self, config: dict[str, Any]) -> list[str]:
        """The secrets in a decrypted config, for masking (``conveyor.secrets``' rule)."""
        return secret_values(config, self.secret_fields)

    def where(self, config: Any, settings: Settings) -> str:
        """Where the data is read from or lands, in words."""
        return self.title

    def wants_transfer(self, config: Any) -> bool:
        """True when this config asks for files to be copied as they are."""
        return False


class SourceType(ConveyorType):
    """A source: ``build`` returns dlt resources or a dlt source."""

    kind: ClassVar[Kind] = "source"
    capabilities: ClassVar[Capabilities] = Capabilities(merge=True, incremental=True)


class DestinationType(ConveyorType):
    """A destination: ``build`` returns a ``DltTarget``."""

    kind: ClassVar[Kind] = "destination"
    capabilities: ClassVar[Capabilities] = Capabilities(merge=True, lands_in="tables")

    def landing(self, config: Any, context: TypeContext, tables: list[str]) -> Landing:
        """Where the connector of ``context`` lands ``tables`` (names as loaded): a type
        that knows better (schema, folders, a query to look) says so."""
        return Landing(self.where(config, context.settings), tuple(tables))

    def open_sink(self, config: Any, context: TypeContext) -> Any:
        """Where files copied as they are go (``capabilities.file_transfer``): an object
        with ``manifest()`` and ``put(fs, file)`` (``conveyor.pipelines.transfer``)."""
        raise NotImplementedError

    def direct_writer(self) -> Any:
        """The database-to-database writer (``capabilities.direct_copy``): an object with
        ``available()``, ``max_identifier_length`` and ``run(connector, tables, settings,
        stats)`` (``conveyor.pipelines.direct``)."""
        raise NotImplementedError

    def drop_tables(self, config: Any, context: TypeContext, tables: list[str]) -> list[str]:
        """Drop these tables (names as loaded, in the dataset the connector of ``context``
        loads into) for a reset with ``drop_tables``; the ones that existed, dropped. Only
        ever the connector's own tables. By default a type cannot: resets refuse."""
        raise NotImplementedError

    def single_machine(self, config: Any, settings: Settings) -> str | None:
        """Why this config works only while every run of it is on one machine (it writes a
        local database file that flow runs in other pods never see), or None. Connectors on
        a work pool whose runs are not local processes may not use it
        (``services/placement.py``). Default: tables landing in a local path."""
        if self.capabilities.lands_in != "tables":
            return None
        found = self.local_paths(config, settings)
        if not found:
            return None
        name, path = found[0]
        return f"writes the local file {path} ({name})"

    @property
    def drops_tables(self) -> bool:
        """Whether ``drop_tables`` is implemented (a reset may drop this type's tables)."""
        return type(self).drop_tables is not DestinationType.drop_tables


@dataclass
class Registered:
    """Types found in one place (the built-ins, or one plugin's entry point)."""

    origin: str
    types: list[ConveyorType] = field(default_factory=list)
