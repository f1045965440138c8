"""The SQL that recomputes profiles' aggregates (counts, sums, min/max over their entities),
composed once from the configured aggregates; the store runs it."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from psycopg import sql

from cdc_sync.core.mapping import AggregateSpec

_NUMBER = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"


def _aggregate_expr(spec: AggregateSpec, cond: sql.Composable) -> sql.Composable:
    if spec.function == "count":
        return sql.SQL("count(*) FILTER (WHERE {})").format(cond)
    text = sql.SQL("(e.data->>{})").format(sql.Literal(spec.field))
    numbers = sql.SQL("{cond} AND {text} ~ {number}").format(
        text=text, cond=cond, number=sql.Literal(_NUMBER))
    numeric = sql.SQL("{fn}({text}::numeric) FILTER (WHERE {numbers})").format(
        fn=sql.SQL(spec.function), text=text, numbers=numbers)
    # Decimals arrive as text (exact): a result over text values stays decimal text ("127.55").
    exact = sql.SQL("CASE WHEN bool_and(jsonb_typeof(e.data->{field}) = 'string') FILTER (WHERE {numbers})"
                    " THEN to_jsonb({numeric}::text) ELSE to_jsonb({numeric}) END").format(
        field=sql.Literal(spec.field), numbers=numbers, numeric=numeric)
    if spec.function == "sum":
        return exact
    return sql.SQL("coalesce({exact}, to_jsonb({fn}({text}) FILTER (WHERE {cond})))").format(
        exact=exact, fn=sql.SQL(spec.function), text=text, cond=cond)


GIVEN_PROFILES = sql.SQL("unnest(%s::bigint[]) AS k(id)")
LIVE_PROFILES = sql.SQL("(SELECT id FROM profiles WHERE merged_into IS NULL) AS k")


def aggregate_query(aggregates: Mapping[str, AggregateSpec],
                    profiles: sql.Composable = GIVEN_PROFILES) -> sql.Composed:
    """One UPDATE that recomputes every configured aggregate for the profiles given as %s
    (or, with `profiles=LIVE_PROFILES`, for every live profile).

    `where` compares JSON values (true is not "True"); min/max compare numbers as numbers
    (decimals arrive as numeric strings) and anything else, such as ISO times, as text.
    """
    parts = []
    for name, spec in sorted(aggregates.items()):
        cond = sql.SQL("e.kind = {}").format(sql.Literal(spec.entity))
        for column, allowed in sorted((spec.where or {}).items()):
            cond = sql.SQL("{} AND e.data->{} = ANY({}::jsonb[])").format(
                cond, sql.Literal(column), sql.Literal([orjson.dumps(v).decode() for v in allowed]))
        parts.append(sql.SQL("{}, {}").format(sql.Literal(name), _aggregate_expr(spec, cond)))
    return sql.SQL(
        "UPDATE profiles p SET aggregates = a.doc, updated_at = now() FROM ("
        " SELECT k.id, jsonb_strip_nulls(jsonb_build_object({})) AS doc"
        " FROM {} LEFT JOIN entities e ON e.profile_id = k.id AND NOT e.deleted GROUP BY k.id) a"
        " WHERE p.id = a.id").format(sql.SQL(", ").join(parts), profiles)


_COMPOSED: dict[int, tuple[Mapping[str, AggregateSpec], sql.Composed, sql.Composed]] = {}


def composed(aggregates: Mapping[str, AggregateSpec]) -> tuple[sql.Composed, sql.Composed]:
    """aggregate_query for given profiles and for every live one, composed once per configured
    mapping (a store is made for every connection the API borrows: composing cost it 1 ms)."""
    found = _COMPOSED.get(id(aggregates))
    if found is None or found[0] is not aggregates:
        found = (aggregates, aggregate_query(aggregates), aggregate_query(aggregates, LIVE_PROFILES))
        if len(_COMPOSED) > 16:  # a process sees one config; tests see many
            _COMPOSED.clear()
        _COMPOSED[id(aggregates)] = found
    return found[1], found[2]
