"""Settings: environment over defaults, options over environment, one clear line per bad value."""

from __future__ import annotations

from datetime import date

import pytest

from tasks.errors import ConfigurationError
from tasks.settings import SegmentSettings, load_settings


def test_defaults_need_nothing_installed() -> None:
    settings = load_settings()

    assert settings.dialect == "sqlite"
    assert settings.database_url.get_secret_value() == "sqlite:///segments.db"
    assert settings.source_table == "transactions"
    assert settings.features == ("recency_days", "frequency", "monetary")
    assert (settings.k_min, settings.k_max, settings.n_clusters) == (4, 8, None)


def test_environment_and_dotenv_are_read_and_options_win(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    (tmp_path / ".env").write_text("SEGMENTS_SOURCE_TABLE=sales.orders\nSEGMENTS_K_MAX=7\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEGMENTS_FEATURES", "recency_days, monetary,tenure_days")
    monkeypatch.setenv("SEGMENTS_ORDER_ID_COLUMN", "order_no")
    monkeypatch.setenv("SEGMENTS_K_MAX", "8")

    settings = load_settings(k_max=6, as_of=date(2024, 1, 1), n_clusters=None)

    assert settings.source_table == "sales.orders"  # from .env
    assert settings.order_id_column == "order_no"  # from the environment
    assert settings.features == ("recency_days", "monetary", "tenure_days")
    assert settings.k_max == 6  # the option beats the environment, which beats .env
    assert settings.as_of == date(2024, 1, 1)


def test_empty_optional_columns_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMENTS_ORDER_ID_COLUMN", "")

    assert load_settings().order_id_column is None


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SEGMENTS_K_MAX", "99", r"^invalid setting SEGMENTS_K_MAX: .*less than or equal to 30"),
        (
            "SEGMENTS_AMOUNT_COLUMN",
            "amount; drop table x",
            r"^invalid setting SEGMENTS_AMOUNT_COLUMN: .*not a plain identifier",
        ),
        ("SEGMENTS_SOURCE_TABLE", "a.b.c", r"^invalid setting SEGMENTS_SOURCE_TABLE: .*more than one dot"),
        ("SEGMENTS_FEATURES", "recency_days,loyalty", r"SEGMENTS_FEATURES: unknown feature\(s\) loyalty"),
        ("SEGMENTS_DATABASE_URL", "mysql://x@y/z", r"SEGMENTS_DATABASE_URL: database 'mysql' is not supported"),
        ("SEGMENTS_DATABASE_URL", "not a url", r"SEGMENTS_DATABASE_URL: is not an SQLAlchemy URL"),
        (
            "SEGMENTS_QUANTITY_COLUMN",
            "qty",
            r"SEGMENTS_QUANTITY_COLUMN: set both SEGMENTS_QUANTITY_COLUMN and SEGMENTS_UNIT_PRICE_COLUMN",
        ),
        ("SEGMENTS_K_MIN", "12", r"SEGMENTS_K_MIN: k_min \(12\) is greater than k_max \(8\)"),
        (
            "SEGMENTS_CUSTOMER_ID_COLUMN",
            "сustomer_id",
            r"SEGMENTS_CUSTOMER_ID_COLUMN: .*not a plain identifier",
        ),  # Cyrillic с
    ],
)
def test_a_bad_value_names_the_variable_to_fix(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigurationError, match=message) as raised:
        load_settings()

    assert "\n" not in str(raised.value)


def test_a_bad_option_names_the_option_too() -> None:
    with pytest.raises(
        ConfigurationError, match=r"--lookback-days / SEGMENTS_LOOKBACK_DAYS: .*greater than or equal to 1"
    ):
        load_settings(lookback_days=0)


def test_the_password_never_appears_in_public_settings() -> None:
    settings = load_settings(database_url="postgresql://shop:hunter2@db.internal:5432/sales")

    assert settings.dialect == "postgresql"
    assert settings.database_url.get_secret_value().startswith("postgresql+psycopg://")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.public_dict())
    assert settings.public_dict()["database"] == "postgresql+psycopg://shop:***@db.internal:5432/sales"


def test_settings_are_immutable() -> None:
    settings = SegmentSettings()

    with pytest.raises(Exception, match="frozen"):
        settings.k_max = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"source_table": ""}, "SEGMENTS_SOURCE_TABLE: set SEGMENTS_SOURCE_TABLE to the transactions table, or"),
        ({"features": "recency_days,age"}, "SEGMENTS_FEATURES: unknown feature(s) age"),
        (
            {"source_table": "", "customer_table": "crm.customers", "features": "age,monetary"},
            "monetary come from transactions, but SEGMENTS_SOURCE_TABLE is empty",
        ),
        ({"customer_table": "crm.customers", "features": "age,segment_id"}, "segment_id cannot be a feature"),
        ({"customer_table": "crm.customers", "features": "age;drop"}, "SEGMENTS_FEATURES"),
    ],
)
def test_customer_attribute_settings_say_what_is_wrong(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(**overrides)
    assert message in str(raised.value)


def test_attributes_alone_or_beside_rfm_are_valid() -> None:
    alone = load_settings(source_table="", customer_table="mall_customers", features="annual_income_k,gender")
    assert alone.attributes_only and alone.attribute_features == ("annual_income_k", "gender")
    together = load_settings(customer_table="crm.customers", features="recency_days,frequency,age")
    assert not together.attributes_only and together.attribute_features == ("age",)


def test_a_source_apart_from_the_outputs_is_read_from_its_own_url_and_never_shown() -> None:
    settings = load_settings(source_url="sc://spark.example:15002/;token=abc123secret;user_id=me")
    assert settings.source_engine == "spark" and settings.dialect == "sqlite"  # outputs stay where they were
    assert "abc123secret" not in settings.masked_source_url()
    assert "abc123secret" not in str(settings.public_dict())
    assert load_settings(source_url="local[2]").source_engine == "spark"
    assert load_settings(source_url="duckdb://").source_engine == "duckdb"
    assert load_settings().source_engine == "sqlite"  # unset: the output database
    with pytest.raises(ConfigurationError, match="SEGMENTS_SOURCE_URL: source 'mysql' is not supported"):
        load_settings(source_url="mysql://u:p@h/db")
    with pytest.raises(ConfigurationError, match="SEGMENTS_CHANGED_AT_COLUMN: incremental nights need"):
        load_settings(changed_at_column="loaded_at")  # an SQLite source
    assert load_settings(source_url="duckdb://", changed_at_column="loaded_at").keeps_state


def test_a_catalog_table_is_for_spark_only() -> None:
    assert load_settings(source_url="local[2]", source_table="main.sales.order_lines").source_table == (
        "main.sales.order_lines"
    )
    with pytest.raises(ConfigurationError, match=r"SEGMENTS_SOURCE_TABLE: .*catalog.schema.table is for a Spark"):
        load_settings(source_table="main.sales.order_lines")
    with pytest.raises(ConfigurationError, match="SEGMENTS_SOURCE_TABLE"):
        load_settings(source_url="local[2]", source_table="main.sales.order_lines.x")
