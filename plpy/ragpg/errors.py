"""Errors with a SQLSTATE, raised by the engine and turned into Postgres errors by plpy.

Every message names the function and the input at fault, and the hint says how to fix it.
"""
from __future__ import annotations

SHOWN_CHARS = 80


def shown(value) -> str:
    """A value as a message shows it: its repr, cut to its first SHOWN_CHARS characters with
    its length after, so that a message (and the log line it becomes) stays short whatever
    a caller passed. As rag._shown in SQL."""
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return f"{value[:SHOWN_CHARS]!r}... ({len(value):,} characters)"
    return repr(value)


class RagError(Exception):
    sqlstate = "XX000"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class InvalidParameter(RagError):
    sqlstate = "22023"  # invalid_parameter_value


class NullValue(RagError):
    sqlstate = "22004"  # null_value_not_allowed


class ModelUnavailable(RagError):
    sqlstate = "58P01"  # undefined_file: the model files are not where they should be


class BudgetExceeded(RagError):
    sqlstate = "53400"  # configuration_limit_exceeded: rag.daily_budget is spent


class Uncounted(BudgetExceeded):
    """A priced call whose cost the server cannot count (its ragpg_spend files): not made
    (a BudgetExceeded: a reranker falls back to the fused order)."""
    sqlstate = "58030"  # io_error


class Unaccounted(BudgetExceeded):
    """A priced call in a read-only transaction on a primary: the ledger could not hold it
    (a BudgetExceeded: a reranker falls back to the fused order, as when the budget is spent)."""
    sqlstate = "25006"  # read_only_sql_transaction


class LimitExceeded(RagError):
    sqlstate = "54000"  # program_limit_exceeded: e.g. more chunks than rag.max_chunks_per_document


class NotAllowed(RagError):
    sqlstate = "42501"  # insufficient_privilege
