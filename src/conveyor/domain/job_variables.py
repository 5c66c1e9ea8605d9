"""A connector's Prefect job variables: what its flow runs get from the work pool's base job
template — CPU and memory requests and limits, node selector, tolerations, plain environment
variables, image.

Stored as JSON on the connector (``connectors.job_variables``, only the values set); null
means the pool's defaults. Each field is a variable of the same name in the pool's base job
template: the Helm chart's kubernetes template (``charts/conveyor/templates/_jobtemplate.tpl``)
has them all, Prefect's process template only ``env``. ``accepted_problems`` checks them
against a pool's variables (``services/job_pool.py`` at save time, the gateway before it
applies a deployment).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    WrapSerializer,
    field_validator,
    model_validator,
)

from conveyor.errors import FieldProblem

# A Kubernetes quantity: "500m", "2", "0.5", "512Mi", "2Gi", "1G", "1e3".
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][0-9]+)?$"
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# Conveyor's and Prefect's own settings (database URL, secret key, API URL and key...) come
# from the platform, never from a connector.
RESERVED_ENV_PREFIXES = ("CONVEYOR_", "PREFECT_")
# Variables that change how the flow process itself runs or where it connects: the
# interpreter and loader (code from any file), TLS trust and proxies (what a stored secret
# is sent through), the cloud SDKs' credential chains. A run holds every secret of its
# endpoints: none of these may come from a connector.
CONTROLLING_ENV_PREFIXES = ("PYTHON", "LD_", "DYLD_", "SSL_", "AWS_", "GOOGLE_", "AZURE_")
CONTROLLING_ENV_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "TMPDIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "PGSERVICEFILE",
        "PGPASSFILE",
        "PGHOST",
        "PGHOSTADDR",
        "PGSSLROOTCERT",
    }
)
IMAGE = r"^[a-z0-9]([-a-z0-9._/:]*[a-z0-9])?(:[\w][\w.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
MAX_ENTRIES = 50

Quantity = Annotated[str, Field(pattern=QUANTITY, max_length=32)]


class Toleration(BaseModel):
    """A Kubernetes toleration, with Kubernetes' own field names."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = Field(default=None, max_length=316)
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = Field(default=None, ge=0, le=31_536_000)

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.key is not None and not LABEL_KEY.match(self.key):
            raise ValueError(f"key {self.key!r} is not a valid label key")
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.key is None and self.operator != "Exists":
            raise ValueError("a toleration without a key needs operator Exists")
        if self.tolerationSeconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds applies only to effect NoExecute")
        return self


class JobVariables(BaseModel):
    """What a connector's flow runs get from the work pool; every field optional (the pool's
    default when left out)."""

    model_config = ConfigDict(extra="forbid")

    cpu_request: Quantity | None = Field(default=None, description="CPU request, e.g. 500m")
    cpu_limit: Quantity | None = Field(default=None, description="CPU limit, e.g. 2")
    memory_request: Quantity | None = Field(default=None, description="Memory request, e.g. 1Gi")
    memory_limit: Quantity | None = Field(default=None, description="Memory limit, e.g. 4Gi")
    node_selector: dict[str, str] | None = Field(
        default=None, max_length=MAX_ENTRIES, description="Node labels the flow-run pod needs"
    )
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=MAX_ENTRIES, description="Taints the flow-run pod tolerates"
    )
    env: dict[str, Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None,
        max_length=MAX_ENTRIES,
        description="Plain environment variables (stored and shown in clear: no secrets)",
    )
    image: str | None = Field(
        default=None, max_length=512, pattern=IMAGE, description="Image of the flow run"
    )

    @field_validator("node_selector")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, label in (value or {}).items():
            if not LABEL_KEY.match(key):
                raise ValueError(f"{key!r} is not a valid label key")
            if not LABEL_VALUE.match(label):
                raise ValueError(f"the value of {key!r} ({label!r}) is not a valid label value")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key in value or {}:
            if not ENV_NAME.match(key):
                raise ValueError(f"{key!r} is not an environment variable name")
            if key.upper().startswith(RESERVED_ENV_PREFIXES):
                raise ValueError(
                    f"{key!r}: CONVEYOR_* and PREFECT_* variables come from the platform "
                    "(its database, key and API), never from a connector"
                )
            upper = key.upper()
            if (
                upper.startswith(CONTROLLING_ENV_PREFIXES)
                or upper in CONTROLLING_ENV_NAMES
                or "__" in key  # dlt's configuration (SECTION__KEY): credentials, destinations
            ):
                raise ValueError(
                    f"{key!r} would change how the run itself works (its interpreter, TLS, "
                    "proxies, credentials or dlt's configuration), not pass it a value"
                )
        return value

    def variables(self) -> dict[str, Any]:
        """The job variables as Prefect takes them: only what is set."""
        return self.model_dump(exclude_none=True, mode="json")


def _as_dict(value: JobVariables) -> dict[str, Any]:
    return value.variables()


def _serialise(value: Any, handler: SerializerFunctionWrapHandler) -> Any:
    # The field holds the stored dict: serialise it as the model it is (the schema stays the
    # model's), with only the values set.
    if isinstance(value, dict):
        return JobVariables.model_validate(value).variables()
    return handler(value)


# The connector field's type: checked as JobVariables, kept as the plain dict of what is set.
JobVariablesField = Annotated[JobVariables, AfterValidator(_as_dict), WrapSerializer(_serialise)]

# The variables Prefect's process work pool template takes that a connector may set.
PROCESS_VARIABLES = frozenset({"env"})
ALL_VARIABLES = frozenset(JobVariables.model_fields)


def accepted_problems(
    variables: dict[str, Any] | None,
    accepted: Iterable[str],
    *,
    pool: str,
    pool_type: str | None,
    loc: str = "job_variables",
) -> list[FieldProblem]:
    """One problem per job variable the pool's base job template does not take."""
    known = set(accepted)
    kind = f"{pool_type} work pool" if pool_type else "work pool"
    return [
        FieldProblem(
            f"{loc}.{name}",
            f"the {kind} '{pool}' has no job variable '{name}' in its base job template"
            + (" (a process pool takes only env)" if pool_type == "process" else ""),
        )
        for name in sorted(variables or {})
        if name not in known
    ]
