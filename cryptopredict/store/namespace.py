"""The store rows of a demo or test namespace: those whose pair, or registered model, is in it. The pair
column holds the bare namespaced pair on every venue (the venue is column `exchange`), so rows of all
venues are found."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Engine, Table, delete, func, select

from cryptopredict.store.schema import metadata
from cryptopredict.topics import namespace_pair_prefix, registered_model_prefix


def _in_namespace(table: Table, namespace: str) -> ColumnElement[bool] | None:
    """Rows keyed by pair by their pair; rows of a model alone by the model's name; None: not namespaced
    (news and dead letters are shared by every namespace, and pruned by age)."""
    if "pair" in table.c:
        return table.c.pair.startswith(namespace_pair_prefix(namespace), autoescape=True)
    if "model_name" in table.c:
        return table.c.model_name.startswith(registered_model_prefix(namespace), autoescape=True)
    return None


def namespace_tables(namespace: str) -> list[tuple[Table, ColumnElement[bool]]]:
    found = ((table, _in_namespace(table, namespace)) for table in metadata.sorted_tables)
    return [(table, where) for table, where in found if where is not None]


def remove_namespace_rows(engine: Engine, namespace: str, *, dry_run: bool) -> dict[str, int]:
    """Rows of `namespace` per table, deleted unless `dry_run`."""
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        for table, where in namespace_tables(namespace):
            if dry_run:
                counts[table.name] = int(
                    conn.execute(select(func.count()).select_from(table).where(where)).scalar_one()
                )
            else:
                counts[table.name] = conn.execute(delete(table).where(where)).rowcount
    return counts
