"""The one configuration object of a run.

Values come from flow parameters / CLI options first, then ``SEGMENTS_*`` environment variables (and a
``.env`` file in the working directory), then the defaults below. The object is built once, at the start
of a run, by :func:`load_settings`; nothing reads the environment at import time.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from tasks.errors import ConfigurationError

ENV_PREFIX = "SEGMENTS_"
#: Spark started in this process: local, local[N] or local[*].
SPARK_LOCAL_PATTERN = re.compile(r"local(\[(\d{1,3}|\*)\])?")
FILE_SUFFIXES = (".parquet", ".csv", ".csv.gz", ".tsv")
DEFAULT_DATABASE_URL = "sqlite:///segments.db"

#: Features computed from transactions; any subset can be clustered on.
COMPUTED_FEATURES: tuple[str, ...] = (
    "recency_days",
    "frequency",
    "monetary",
    "avg_order_value",
    "tenure_days",
)

#: Columns of customer_segments that a customer attribute may not be called.
RESERVED_OUTPUT_COLUMNS = frozenset(
    {"customer_id", "segment_id", "segment_name", "r_score", "f_score", "m_score", "as_of", "run_id"}
    | {"model_version", "scored_at"}
)
DEFAULT_REPORT_PATH = "segments_report.html"

# Letters, digits, underscore, dollar; must not start with a digit; at most 63 characters (PostgreSQL's
# limit). ASCII only: look-alike characters from other scripts are refused, not normalised.
IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def check_identifier(value: str, what: str) -> str:
    """Return ``value`` if it is a plain SQL identifier, else raise ``ValueError`` naming ``what``."""
    if not IDENTIFIER_PATTERN.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a plain identifier (ASCII letters, digits, _ or $, not starting "
            "with a digit, at most 63 characters)"
        )
    return value


def split_table_name(value: str) -> tuple[str | None, str]:
    """Split ``schema.table`` or ``table`` into its validated parts."""
    parts = value.split(".")
    if len(parts) > 2:
        raise ValueError(f"table {value!r} has more than one dot; use table or schema.table")
    if len(parts) == 2:
        return check_identifier(parts[0], "schema"), check_identifier(parts[1], "table")
    return None, check_identifier(parts[0], "table")


class SegmentSettings(BaseSettings):
    """Where the transactions are, how their columns map, where outputs go, and how to segment.

    Column and table names are validated against a strict identifier pattern here and quoted again
    wherever they reach SQL. ``database_url`` is a secret: it is never printed; use
    :meth:`masked_database_url` for messages.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        frozen=True,
        validate_default=True,
    )

    # --- where the data is -------------------------------------------------------------------------
    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    # where the transactions are read, when not in the output database: an SQLAlchemy URL (postgresql,
    # sqlite, duckdb), a Spark Connect URL (sc://host:port) or local[N] (Spark in this process)
    source_url: SecretStr | None = None
    # a table or view (schema.table); with DuckDB or Spark also a path of Parquet or CSV files
    source_table: str = "transactions"
    customer_id_column: str = "customer_id"
    occurred_at_column: str = "occurred_at"
    amount_column: str | None = "amount"
    quantity_column: str | None = None
    unit_price_column: str | None = None
    order_id_column: str | None = None
    # a load timestamp or increasing row id every inserted or updated row gets a later value of: with
    # it, a night recomputes only the customers with changed rows (PostgreSQL; tasks/extract/incremental.py)
    changed_at_column: str | None = None
    customer_table: str | None = None
    features: Annotated[tuple[str, ...], NoDecode] = ("recency_days", "frequency", "monetary")
    output_schema: str = "public"
    # how long the write waits for a lock on an output table held by another session (a BI query)
    # before it gives up and rolls back; meanwhile, readers that come later queue behind it
    lock_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)

    # --- how to segment (same names as the flow parameters and CLI options) ------------------------
    as_of: date | None = None
    lookback_days: int | None = Field(default=None, ge=1, le=36_500)
    n_clusters: int | None = Field(default=None, ge=2, le=30)
    # a range of K marketing can use; the rule picks within it (tasks/model/choose_k.py)
    k_min: int = Field(default=4, ge=2, le=30)
    k_max: int = Field(default=8, ge=2, le=30)
    sample_size: int = Field(default=200_000, ge=100, le=10_000_000)
    winsorize_quantile: float = Field(default=0.99, gt=0.5, le=1.0)
    random_state: int = Field(default=42, ge=0, le=2**32 - 1)
    model_policy: Literal["auto", "reuse", "refit"] = "auto"
    max_model_age_days: int = Field(default=30, ge=1, le=3650)
    drift_psi_threshold: float = Field(default=0.25, gt=0, le=10)
    drift_inertia_ratio: float = Field(default=1.25, gt=1, le=100)
    dry_run: bool = False
    # the data gates (tasks/gates.py): how far the share of rows rejected for quality may rise against
    # the last successful run (when it also more than doubled), and how far its customers may fall
    max_rejected_share_rise: float = Field(default=0.05, ge=0, le=1)
    max_customer_drop: float = Field(default=0.5, ge=0, le=1)
    force: bool = False
    report_path: str | None = DEFAULT_REPORT_PATH
    compare_algorithms: bool = False
    # with a change column: rebuild the per-customer state from every row (and count how many customers
    # it corrects) when the last full aggregation finished this many days ago
    full_refresh_days: int = Field(default=7, ge=1, le=3650)
    full_refresh: bool = False

    @field_validator(
        "amount_column",
        "quantity_column",
        "unit_price_column",
        "order_id_column",
        "changed_at_column",
        "customer_table",
        "report_path",
        "source_url",
        mode="before",
    )
    @classmethod
    def _empty_means_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator(
        "customer_id_column",
        "occurred_at_column",
        "amount_column",
        "quantity_column",
        "unit_price_column",
        "order_id_column",
        "changed_at_column",
        "output_schema",
    )
    @classmethod
    def _plain_identifier(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return check_identifier(value.strip(), "name")

    @field_validator("customer_table")
    @classmethod
    def _table_name(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return value
        split_table_name(value.strip())
        return value.strip()

    @field_validator("source_table")
    @classmethod
    def _table_or_path(cls, value: str) -> str:
        value = value.strip()
        if value and not is_file_source(value) and not _is_catalog_table(value):
            split_table_name(value)
        return value

    @field_validator("features", mode="before")
    @classmethod
    def _split_features(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("features")
    @classmethod
    def _feature_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one feature is needed")
        for name in value:
            check_identifier(name, "feature")
        reserved = sorted(set(value) & RESERVED_OUTPUT_COLUMNS)
        if reserved:
            raise ValueError(f"{', '.join(reserved)} cannot be a feature (a column of customer_segments)")
        if len(set(value)) != len(value):
            raise ValueError("a feature is listed twice")
        return value

    @field_validator("database_url")
    @classmethod
    def _parseable_url(cls, value: SecretStr) -> SecretStr:
        try:
            url = make_url(value.get_secret_value())
        except ArgumentError:
            raise ValueError(
                "is not an SQLAlchemy URL (e.g. postgresql+psycopg://user@host/db or sqlite:///file.db)"
            ) from None
        if url.get_backend_name() not in ("postgresql", "sqlite"):
            raise ValueError(f"database {url.get_backend_name()!r} is not supported; use postgresql or sqlite")
        return SecretStr(_psycopg_url(value.get_secret_value()))

    @field_validator("source_url")
    @classmethod
    def _source_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().strip()
        if SPARK_LOCAL_PATTERN.fullmatch(text) or text.startswith("sc://"):
            return SecretStr(text)
        try:
            backend = make_url(text).get_backend_name()
        except ArgumentError:
            raise ValueError(
                "is not a source: use an SQLAlchemy URL (postgresql+psycopg://..., sqlite:///file.db, "
                "duckdb:///file.duckdb, duckdb:// for files), sc://host:port for Spark Connect, or local[N]"
            ) from None
        if backend not in ("postgresql", "sqlite", "duckdb"):
            raise ValueError(f"source {backend!r} is not supported; use postgresql, sqlite, duckdb, sc:// or local[N]")
        return SecretStr(_psycopg_url(text))

    @model_validator(mode="after")
    def _consistent(self) -> SegmentSettings:
        if not self.source_table and not self.customer_table:
            raise ValueError(
                "source_table: set SEGMENTS_SOURCE_TABLE to the transactions table, or SEGMENTS_CUSTOMER_TABLE "
                "to segment customers on their attributes alone"
            )
        unknown = [name for name in self.features if name not in COMPUTED_FEATURES]
        if unknown and not self.customer_table:
            raise ValueError(
                f"features: unknown feature(s) {', '.join(unknown)}; choose from {', '.join(COMPUTED_FEATURES)}, "
                "or set SEGMENTS_CUSTOMER_TABLE to cluster on its columns too"
            )
        computed = [name for name in self.features if name in COMPUTED_FEATURES]
        if not self.source_table and computed:
            raise ValueError(
                f"features: {', '.join(computed)} come from transactions, but SEGMENTS_SOURCE_TABLE is empty; "
                "list customer-table columns in SEGMENTS_FEATURES (e.g. annual_income,spending_score)"
            )
        if self.changed_at_column and self.source_engine == "sqlite":
            raise ValueError(
                "changed_at_column: incremental nights need PostgreSQL, DuckDB or Spark; an SQLite source is "
                "aggregated in full every run, so leave SEGMENTS_CHANGED_AT_COLUMN empty"
            )
        if self.source_table and _is_catalog_table(self.source_table) and self.source_engine != "spark":
            raise ValueError(
                f"source_table: {self.source_table!r} has more than one dot; use table or schema.table "
                "(catalog.schema.table is for a Spark source)"
            )
        if self.source_table and is_file_source(self.source_table) and self.source_engine not in ("duckdb", "spark"):
            raise ValueError(
                f"source_table: {self.source_table!r} is a path of files, which only DuckDB or Spark read; set "
                "SEGMENTS_SOURCE_URL to duckdb:// or local[2] (or give a table name)"
            )
        if not self.source_table:
            return self  # attributes alone: the transaction column mapping is not used
        if (self.quantity_column is None) != (self.unit_price_column is None):
            raise ValueError(
                "quantity_column: set both SEGMENTS_QUANTITY_COLUMN and SEGMENTS_UNIT_PRICE_COLUMN, or neither"
            )
        if self.quantity_column is None and self.amount_column is None:
            raise ValueError(
                "amount_column: set SEGMENTS_AMOUNT_COLUMN, or SEGMENTS_QUANTITY_COLUMN and SEGMENTS_UNIT_PRICE_COLUMN"
            )
        if self.k_min > self.k_max:
            raise ValueError(f"k_min: k_min ({self.k_min}) is greater than k_max ({self.k_max})")
        return self

    # --- derived values ----------------------------------------------------------------------------
    @property
    def dialect(self) -> str:
        """``postgresql`` or ``sqlite``."""
        return make_url(self.database_url.get_secret_value()).get_backend_name()

    def masked_database_url(self) -> str:
        """The database URL with its password replaced by ``***``, safe for logs and messages."""
        return mask_url(self.database_url.get_secret_value())

    @property
    def source(self) -> str:
        """Where the transactions are read: the source URL, else the output database's."""
        return (self.source_url or self.database_url).get_secret_value()

    @property
    def source_engine(self) -> Literal["postgresql", "sqlite", "duckdb", "spark"]:
        """The engine that aggregates the transactions."""
        source = self.source
        if source.startswith("sc://") or SPARK_LOCAL_PATTERN.fullmatch(source):
            return "spark"
        backend = make_url(source).get_backend_name()
        assert backend in ("postgresql", "sqlite", "duckdb")
        return backend  # type: ignore[return-value]

    @property
    def source_setting(self) -> str:
        """The environment variable that says where the source is (for error messages)."""
        return env_var("source_url") if self.source_url else env_var("database_url")

    def masked_source_url(self) -> str:
        """The source's URL with its password or token hidden."""
        return mask_url(self.source)

    @property
    def attributes_only(self) -> bool:
        """Segment customers on customer-table columns alone (no transactions)."""
        return not self.source_table

    @property
    def attribute_features(self) -> tuple[str, ...]:
        """The features that are customer-table columns."""
        return tuple(name for name in self.features if name not in COMPUTED_FEATURES)

    @property
    def keeps_state(self) -> bool:
        """Whether runs keep per-customer state for incremental nights (a change column is named)."""
        return bool(self.changed_at_column and self.source_table)

    @property
    def uses_quantity_times_price(self) -> bool:
        return self.quantity_column is not None and self.unit_price_column is not None

    def public_dict(self) -> dict[str, Any]:
        """Every setting except secrets, JSON-friendly, for run records and artifacts."""
        data = self.model_dump(mode="json", exclude={"database_url", "source_url"})
        data["database"] = self.masked_database_url()
        data["source"] = self.masked_source_url()
        return data


def is_file_source(source_table: str) -> bool:
    """Whether ``SEGMENTS_SOURCE_TABLE`` names files (a path, a folder or a glob) rather than a table."""
    return any(mark in source_table for mark in ("/", "\\", "*")) or source_table.lower().endswith(FILE_SUFFIXES)


def _is_catalog_table(value: str) -> bool:
    """``catalog.schema.table`` (Spark's catalogs, Databricks' Unity Catalog), each part a plain name."""
    parts = value.split(".")
    return len(parts) == 3 and all(IDENTIFIER_PATTERN.fullmatch(part) for part in parts)


def _psycopg_url(url: str) -> str:
    # A bare postgresql:// URL means psycopg2 to SQLAlchemy; the project ships psycopg 3.
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername != "postgresql+psycopg":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def mask_url(url: str) -> str:
    """Render a database or source URL with its password (or Spark Connect token) hidden."""
    if url.startswith("sc://"):
        # sc://host:port/;token=...;user_id=...: every parameter may carry a credential
        return url.split("/;", 1)[0] + ("/;***" if "/;" in url else "")
    if SPARK_LOCAL_PATTERN.fullmatch(url):
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


def env_var(field_name: str) -> str:
    """The environment variable that sets ``field_name``."""
    return ENV_PREFIX + field_name.upper()


def cli_option(field_name: str) -> str:
    """The CLI option (and flow parameter) that sets ``field_name``."""
    return "--" + field_name.replace("_", "-")


def load_settings(**overrides: Any) -> SegmentSettings:
    """Build the settings from explicit overrides over the environment over defaults.

    Overrides whose value is ``None`` are ignored, so an option left empty falls back to the
    environment. A bad value raises :class:`ConfigurationError` whose one-line message names the
    environment variable (and the option, when one was given) to fix.
    """
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return SegmentSettings(**given)
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc, given)) from None


def _describe(exc: ValidationError, given: dict[str, Any]) -> str:
    problems = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        field = str(error["loc"][0]) if error["loc"] else ""
        if not field and ":" in message:
            # model-level checks name their field before a colon
            field, message = (part.strip() for part in message.split(":", 1))
        if field in SegmentSettings.model_fields:
            where = env_var(field)
            if field in given:
                where = f"{cli_option(field)} / {where}"
            problems.append(f"{where}: {message}")
        else:
            problems.append(message)
    return "invalid setting " + "; ".join(problems)
