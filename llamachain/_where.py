"""Chroma ``where`` filters, checked and evaluated in Python.

The hybrid retriever filters BM25 candidates with the same ``where`` dict that Chroma applies
to the dense search, so both must agree.  :func:`matches` follows Chroma 1.x:

* ``{"key": value}`` is ``{"key": {"$eq": value}}``.
* ``$eq``/``$in`` need the key to be present with a value of the same kind: a bool only equals
  a bool, an int equals a float of the same value (``1 == 1.0``), a string only equals a string.
  A list-valued field never equals a scalar (use ``$contains``).
* ``$gt``/``$gte``/``$lt``/``$lte`` take a number and only match numeric (non-bool) values.
* ``$contains``/``$not_contains`` test membership in a list-valued field (with the exact same
  type); on the special key ``"#document"`` they test for a substring of the document text.
* ``$ne``, ``$nin`` and ``$not_contains`` are the negations of ``$eq``, ``$in`` and
  ``$contains``: they also match a document that lacks the key.
* ``$and`` / ``$or`` take lists of filters.

:func:`normalize` also accepts two conveniences that Chroma itself rejects and rewrites them
into what it accepts: a dict with several keys (an implicit ``$and``) and ``$and``/``$or``
lists of a single filter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llamachain.errors import ConfigError

DOCUMENT_KEY = "#document"
_LOGICAL = ("$and", "$or")
_COMPARE = ("$gt", "$gte", "$lt", "$lte")
_OPERATORS = ("$eq", "$ne", *_COMPARE, "$in", "$nin", "$contains", "$not_contains")

Where = dict[str, Any]


def _bad(where: object, problem: str) -> ConfigError:
    try:
        shown = json.dumps(where, sort_keys=True, default=str)
    except (TypeError, ValueError):  # pragma: no cover - unprintable filter
        shown = repr(where)
    return ConfigError(
        f"invalid filter {shown}: {problem}; a filter looks like {{'source': 'a.pdf'}}, "
        "{'page': {'$gte': 2}}, {'file_type': {'$in': ['pdf', 'md']}} or "
        "{'$and': [...]} / {'$or': [...]}"
    )


def _is_scalar(value: object) -> bool:
    return isinstance(value, (str, int, float, bool))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def normalize(where: Mapping[str, Any] | None) -> Where | None:
    """``where`` checked and rewritten into the strict form Chroma accepts (``None`` stays).

    Raises :class:`ConfigError` naming the filter when it is not a valid filter.
    """
    if where is None:
        return None
    return _normalize(where, where)


def _normalize(node: object, root: object) -> Where:
    if not isinstance(node, Mapping) or not node:
        raise _bad(root, f"expected a non-empty dict, got {node!r}")
    if len(node) > 1:
        return {"$and": [_normalize({k: v}, root) for k, v in node.items()]}
    ((key, value),) = node.items()
    if not isinstance(key, str):
        raise _bad(root, f"keys must be strings, got {key!r}")
    if key in _LOGICAL:
        if not isinstance(value, (list, tuple)) or not value:
            raise _bad(root, f"{key} takes a non-empty list of filters")
        parts = [_normalize(v, root) for v in value]
        return parts[0] if len(parts) == 1 else {key: parts}
    if key.startswith("$"):
        raise _bad(root, f"unknown operator {key} at the top level (use $and or $or)")
    if isinstance(value, Mapping):
        if len(value) != 1:
            raise _bad(root, f"the condition on {key!r} must have exactly one operator")
        ((op, operand),) = value.items()
        _check_operator(key, op, operand, root)
        return {key: {op: list(operand) if isinstance(operand, tuple) else operand}}
    if not _is_scalar(value):
        raise _bad(root, f"the value for {key!r} must be a string, number or bool")
    if key == DOCUMENT_KEY:
        raise _bad(root, f"{DOCUMENT_KEY} takes {{'$contains': text}} or {{'$not_contains': text}}")
    return {key: value}


_DOCUMENT_OPERATORS = ("$contains", "$not_contains", "$regex", "$not_regex")


def normalize_document(where_document: Mapping[str, Any] | None) -> Where | None:
    """A Chroma ``where_document`` filter, checked (``None`` stays ``None``).

    It takes ``{"$contains": text}``, ``$not_contains``, ``$regex``, ``$not_regex`` and
    ``$and`` / ``$or`` lists of those.
    """
    if where_document is None:
        return None
    return _normalize_document(where_document, where_document)


def _normalize_document(node: object, root: object) -> Where:
    if not isinstance(node, Mapping) or len(node) != 1:
        raise _bad_document(root, f"expected a dict with one operator, got {node!r}")
    ((op, operand),) = node.items()
    if op in _LOGICAL:
        if not isinstance(operand, (list, tuple)) or not operand:
            raise _bad_document(root, f"{op} takes a non-empty list")
        parts = [_normalize_document(v, root) for v in operand]
        return parts[0] if len(parts) == 1 else {op: parts}
    if op not in _DOCUMENT_OPERATORS:
        raise _bad_document(
            root, f"unknown operator {op!r}; use one of {', '.join(_DOCUMENT_OPERATORS)}"
        )
    if not isinstance(operand, str) or not operand:
        raise _bad_document(root, f"{op} takes a non-empty text")
    return {op: operand}


def _bad_document(where_document: object, problem: str) -> ConfigError:
    return ConfigError(
        f"invalid where_document {where_document!r}: {problem}; for example "
        "{'$contains': 'E4471'} or {'$and': [{'$contains': 'disk'}, {'$not_contains': 'ok'}]}"
    )


def _check_operator(key: str, op: object, operand: object, root: object) -> None:
    if op not in _OPERATORS:
        raise _bad(root, f"unknown operator {op!r}; use one of {', '.join(_OPERATORS)}")
    if key == DOCUMENT_KEY:
        if op not in ("$contains", "$not_contains") or not isinstance(operand, str) or not operand:
            raise _bad(
                root, f"{DOCUMENT_KEY} takes $contains or $not_contains with a non-empty text"
            )
        return
    if op in _COMPARE:
        if not _is_number(operand):
            raise _bad(root, f"{op} compares numbers, got {operand!r}")
    elif op in ("$in", "$nin"):
        if not isinstance(operand, (list, tuple)) or not operand:
            raise _bad(root, f"{op} takes a non-empty list")
        kinds = {_kind(v) for v in operand}
        if None in kinds or len({type(v) for v in operand}) != 1:
            raise _bad(root, f"{op} takes a list of values of one type, got {list(operand)!r}")
    elif not _is_scalar(operand):
        raise _bad(root, f"{op} takes a string, number or bool, got {operand!r}")


def _kind(value: object) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    return None


def _equal(value: object, operand: object) -> bool:
    kind = _kind(value)
    return kind is not None and kind == _kind(operand) and value == operand


def uses_document(where: Mapping[str, Any] | None) -> bool:
    """Whether ``where`` has a condition on the document text (``"#document"``)."""
    if not where:
        return False
    for key, value in where.items():
        if key == DOCUMENT_KEY:
            return True
        if key in _LOGICAL and any(uses_document(w) for w in value):
            return True
    return False


def matches(
    metadata: Mapping[str, Any] | None, where: Mapping[str, Any], document: str | None = None
) -> bool:
    """Whether a record with ``metadata`` (and ``document`` text) passes the filter ``where``.

    ``where`` must already be :func:`normalize`-d (a multi-key dict is read as ``$and``).
    ``document`` is needed only when the filter tests ``"#document"``.
    """
    meta = metadata or {}
    return all(_match_one(meta, key, value, document) for key, value in where.items())


def _match_one(meta: Mapping[str, Any], key: str, cond: Any, document: str | None) -> bool:
    if key == "$and":
        return all(matches(meta, w, document) for w in cond)
    if key == "$or":
        return any(matches(meta, w, document) for w in cond)
    if not isinstance(cond, Mapping):
        return key in meta and _equal(meta[key], cond)
    for op, operand in cond.items():
        if key == DOCUMENT_KEY:
            if document is None:
                raise ValueError("this filter tests the document text: pass document=")
            found = operand in document
            ok = found if op == "$contains" else not found
        else:
            ok = _test(meta, key, op, operand)
        if not ok:
            return False
    return True


def _test(meta: Mapping[str, Any], key: str, op: str, operand: Any) -> bool:
    if op == "$ne":
        return not _test(meta, key, "$eq", operand)
    if op == "$nin":
        return not _test(meta, key, "$in", operand)
    if op == "$not_contains":
        return not _test(meta, key, "$contains", operand)
    if key not in meta:
        return False
    value = meta[key]
    if op == "$eq":
        return _equal(value, operand)
    if op == "$in":
        return any(_equal(value, o) for o in operand)
    if op == "$contains":
        return isinstance(value, list) and any(
            type(v) is type(operand) and v == operand for v in value
        )
    if not _is_number(value):
        return False
    if op == "$gt":
        return bool(value > operand)
    if op == "$gte":
        return bool(value >= operand)
    if op == "$lt":
        return bool(value < operand)
    if op == "$lte":
        return bool(value <= operand)
    raise ValueError(f"unknown operator {op}")


def canonical(where: Mapping[str, Any] | None) -> str:
    """A stable text key for a (normalized) filter, for caches."""
    return json.dumps(where, sort_keys=True, separators=(",", ":"))
