"""The versioned document schema shared by readers, stages, writers and the training loader.

Base columns are fixed; stages declare the columns they add (``Stage.output_columns``) and the
writer casts every batch to the union, so shard files never drift. Internal columns start with
``_`` and are dropped before the final shards are written.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

#: Columns every document has, in order. ``text`` is large_string so one batch may hold
#: documents whose sizes add up past 2 GiB without an offset overflow.
BASE_FIELDS: list[pa.Field] = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("text", pa.large_string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),  # input file, relative to its glob root
    pa.field("domain", pa.string(), nullable=False),
    pa.field("url", pa.string()),
    pa.field("metadata", pa.string()),  # remaining input fields as a JSON object
    pa.field("n_chars", pa.int64(), nullable=False),
]

#: Internal position columns: stable input order, used for deterministic tie-breaks.
INTERNAL_FIELDS: list[pa.Field] = [
    pa.field("_task", pa.int32(), nullable=False),
    pa.field("_row", pa.int64(), nullable=False),
]

DECISION_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("details", pa.string()),  # JSON: the measured values behind the decision
        pa.field("source", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("url", pa.string()),
        pa.field("n_chars", pa.int64()),
        pa.field("text", pa.large_string()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string(), nullable=False),
        pa.field("line", pa.int64()),  # 1-based line (JSONL) or row (Parquet); null for a whole file
        pa.field("field", pa.string()),
        pa.field("error", pa.string(), nullable=False),
        pa.field("raw", pa.string()),  # first 1,000 characters of the offending input
    ]
)


def base_schema(extra: dict[str, pa.DataType] | None = None, internal: bool = False) -> pa.Schema:
    """Schema of a document table: base fields, then stage columns, then internal ones."""
    fields = list(BASE_FIELDS)
    names = {f.name for f in fields}
    for name, dtype in (extra or {}).items():
        if name in names:
            raise ValueError(f"column {name!r} is declared twice")
        fields.append(pa.field(name, dtype))
        names.add(name)
    if internal:
        fields += INTERNAL_FIELDS
    return pa.schema(fields, metadata={b"curation.schema_version": str(SCHEMA_VERSION).encode()})


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Order, cast and null-fill ``table`` to ``schema``; a column that cannot be cast is named."""
    columns = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            if col.type != field.type:
                try:
                    col = col.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise ValueError(f"column {field.name!r}: cannot cast {col.type} to {field.type}: {exc}") from exc
            columns.append(col)
        else:
            columns.append(pa.nulls(len(table), field.type))
    return pa.Table.from_arrays(columns, schema=schema)
