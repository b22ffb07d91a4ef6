"""The parquet schema of generated chains: one row per (image, candidate).

Columns (also documented in docs/generation.md):
  image_id, path, domain, class_name, label   the image (stable id, path relative to the data root)
  candidate        index of the candidate for this image (unique per image across passes); -1 for an
                   image that could not be read (then `error` says why and no chain is present)
  pass_index       0 for the first pass, 1 for the second pass over images with no kept chain
  prompt_kind      "blind" (the label is not shown) or "rationalization" (label-conditioned)
  chain            the completion text
  summary, caption, reasoning, reflection, conclusion   parsed stages (null when absent)
  predicted_label  class parsed from the conclusion, -1 when unparseable
  valid, kept      rejection-sampling flags; reject_reason names the first failed rule
  teacher, engine, prompt_version, temperature, top_p, max_tokens, seed   provenance
  prompt_tokens, completion_tokens, seconds   cost (seconds: the batch's wall time per candidate)
  error            why the image could not be used ("" when fine)
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA = pa.schema([
    ("image_id", pa.string()), ("path", pa.string()), ("domain", pa.string()), ("class_name", pa.string()),
    ("label", pa.int64()), ("candidate", pa.int64()), ("pass_index", pa.int64()), ("prompt_kind", pa.string()),
    ("chain", pa.string()), ("summary", pa.string()), ("caption", pa.string()), ("reasoning", pa.string()),
    ("reflection", pa.string()), ("conclusion", pa.string()), ("predicted_label", pa.int64()),
    ("valid", pa.bool_()), ("kept", pa.bool_()), ("reject_reason", pa.string()), ("teacher", pa.string()),
    ("engine", pa.string()), ("prompt_version", pa.string()), ("temperature", pa.float64()),
    ("top_p", pa.float64()), ("max_tokens", pa.int64()), ("seed", pa.int64()), ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()), ("seconds", pa.float64()), ("error", pa.string()),
])
COLUMNS = tuple(SCHEMA.names)


def to_table(rows: list[dict]) -> pa.Table:
    """Rows (dicts with every column) as a table with exactly SCHEMA."""
    return pa.Table.from_pylist([{name: row.get(name) for name in COLUMNS} for row in rows], schema=SCHEMA)
