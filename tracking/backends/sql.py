"""Connecting to an SQL tracking store: its scheme, an engine, and MLflow's tables as this
package reads and writes them (:data:`~tracking.backends.COLUMNS`)."""
from __future__ import annotations

from typing import Any

from tracking.backends import COLUMNS

SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql")
WRITER_SCHEMES = ("sqlite", "postgresql")   # the dialects with INSERT ... ON CONFLICT used below


def scheme_of(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0].lower()


def sql_engine(uri: str, **kwargs: Any) -> Any:
    """An SQLAlchemy engine on ``uri``; ``postgresql://`` means psycopg2 when psycopg 3 is absent."""
    import importlib.util

    import sqlalchemy as sa

    if uri.startswith(("postgresql://", "postgres://")) and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        uri = "postgresql+psycopg2://" + uri.split("://", 1)[1]
    return sa.create_engine(uri, **kwargs)


def tables() -> dict[str, Any]:
    from sqlalchemy import column, table

    return {name: table(name, *[column(c) for c in sorted(cols)]) for name, cols in COLUMNS.items()}
