"""Decoding request bodies into the use cases' commands, losslessly: an object value is kept as the JSON text the
client sent (only insignificant whitespace removed), so key order, integers of any size, decimals
digit for digit and all of Unicode come back on every later read exactly as sent."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

from events.types import NULL
from service.usecases.commands import MAX_BATCH, MAX_NAME_LENGTH, InvalidInput, LabelBatch, LabelPatch, NewLabel

# The object value stays raw JSON text; it is checked by decoding a copy.
_create_decoder = msgspec.json.Decoder(NewLabel)
_update_decoder = msgspec.json.Decoder(LabelPatch)
_batch_decoder = msgspec.json.Decoder(LabelBatch)
_ITEM = re.compile(r"^\$\.labels\[(\d+)\]\.?([A-Za-z_]*)")
# Decimal floats: any number of digits parses, so only absurd integers (> 4300 digits) are refused.
_object_decoder = msgspec.json.Decoder(dict[str, Any], float_hook=Decimal)
_FIELD = re.compile(r"^\$\.([A-Za-z_]+)")
_MISSING = re.compile(r"missing required field `([A-Za-z_]+)`")


def _invalid(validation_error: str) -> InvalidInput:
    """Reword msgspec's "Expected `str`, got `int` - at `$.text_value`" to lead with the field."""
    message, _, where = validation_error.partition(" - at `")
    where = where.rstrip("`")
    if missing := _MISSING.search(message):
        return InvalidInput(f"{missing.group(1)} is required", missing.group(1))
    if field := _FIELD.match(where):
        return InvalidInput(f"{where[2:]}: {message}", field.group(1))
    return InvalidInput(f"request body must be a JSON object: {message}")


def _decode(decoder: msgspec.json.Decoder, body: bytes, reword: Callable[[str], InvalidInput] = _invalid) -> Any:
    if not body.strip():
        raise InvalidInput("request body is empty: send a JSON object")
    try:
        # Checked whole: msgspec would skip bytes inside fields it ignores.
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("request body is not valid UTF-8") from None
    try:
        decoded = decoder.decode(body)
    except msgspec.ValidationError as error:
        raise reword(str(error)) from None
    except UnicodeDecodeError:
        raise InvalidInput("request body is not valid UTF-8") from None
    except msgspec.DecodeError as error:
        raise InvalidInput(f"request body is not valid JSON: {error}") from None
    except RecursionError:
        raise InvalidInput("object_value is nested too deeply", "object_value") from None
    _reject_duplicate_keys(text)
    return decoded


def _check_text(value: str | None, field: str) -> None:
    if value is not None and "\x00" in value:
        raise InvalidInput(f"{field} contains the character U+0000, which cannot be stored", field)


class _Duplicate(msgspec.Struct, frozen=True):
    """What an object holding a key twice decodes to while the body is scanned for duplicates."""

    key: str


def _duplicate_in(value: object) -> _Duplicate | None:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, _Duplicate):
            return node
        if isinstance(node, list):  # an array, or the pairs of an object kept by the scan
            stack.extend(item[1] if isinstance(item, tuple) else item for item in node)
    return None


def _ignore(_text: str) -> None:
    return None


def _reject_duplicate_keys(body: str) -> None:
    """A key twice in any object of the body is refused, at the top level as inside an object value:
    readers disagree on which of the two wins (msgspec keeps the last, others the first), so checks
    made on one would not hold for the other. One pass over the whole body, building no numbers."""
    found = False

    def scan(pairs: list[tuple[str, Any]]) -> object:
        # A clean object decodes to None, so a clean body builds nothing; once a duplicate is found,
        # the objects closed after it (those enclosing it among them) keep their pairs, so that the
        # top-level field holding it can be named.
        nonlocal found
        if len(dict(pairs)) == len(pairs):
            return pairs if found else None
        found = True
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                return _Duplicate(key)
            seen.add(key)
        raise AssertionError("unreachable: a key is repeated")

    decoder = json.JSONDecoder(object_pairs_hook=scan, parse_int=_ignore, parse_float=_ignore)
    try:
        top = decoder.decode(body)
    except RecursionError:
        raise InvalidInput("request body is nested too deeply") from None
    except ValueError as error:  # msgspec accepted the body before; never skip the check silently
        raise InvalidInput(f"request body is not valid JSON: {error}") from None
    if not found:
        return
    if isinstance(top, _Duplicate):
        raise InvalidInput(f"{top.key[:60]!r} is in the request body twice: send each field once", top.key)
    for field, value in top:
        duplicate = _duplicate_in(value)
        if duplicate is not None:
            raise InvalidInput(f"{field[:60]} has the key {duplicate.key[:60]!r} twice in one object", field)


def _object_text(raw: msgspec.Raw, max_depth: int) -> msgspec.Raw:
    """Check that the object value is an object, not nested too deep and free of U+0000; return it compacted."""
    if raw == NULL:
        return NULL
    try:
        value = _object_decoder.decode(raw)
    except msgspec.ValidationError as error:
        message, _, where = str(error).partition(" - at `")
        where = where.rstrip("`").replace("$", "object_value", 1) or "object_value"
        raise InvalidInput(f"{where}: {message}", "object_value") from None
    except RecursionError:
        raise InvalidInput("object_value is nested too deeply", "object_value") from None
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise InvalidInput(f"object_value is nested deeper than {max_depth} levels", "object_value")
        if isinstance(node, dict):
            for key in node:
                _check_text(key, "object_value")
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
            elif isinstance(child, str):
                _check_text(child, "object_value")
    return msgspec.Raw(msgspec.json.format(raw, indent=-1))


def _check_name(name: str | None) -> None:
    if name is None:
        return
    _check_text(name, "output_resource_name")
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"output_resource_name must be 1 to {MAX_NAME_LENGTH} characters", "output_resource_name")


def decode_new_label(body: bytes, max_depth: int) -> NewLabel:
    new: NewLabel = _decode(_create_decoder, body)
    _check_name(new.output_resource_name)
    _check_text(new.text_value, "text_value")
    return msgspec.structs.replace(new, object_value=_object_text(new.object_value, max_depth))


def decode_label_batch(body: bytes, max_depth: int) -> LabelBatch:
    """A batch whose every item is a valid label; the first bad one is named, e.g. `labels[17].text_value`."""
    batch: LabelBatch = _decode(_batch_decoder, body, _invalid_item)
    items, names = [], set()
    for n, new in enumerate(batch.labels):
        try:
            _check_name(new.output_resource_name)
            _check_text(new.text_value, "text_value")
            item = msgspec.structs.replace(new, object_value=_object_text(new.object_value, max_depth))
        except InvalidInput as error:
            raise InvalidInput(f"labels[{n}].{error}", f"labels[{n}].{error.field}") from None
        if new.output_resource_name in names:
            field = f"labels[{n}].output_resource_name"
            raise InvalidInput(f"{field}: {new.output_resource_name[:60]!r} is in the batch twice", field)
        names.add(new.output_resource_name)
        items.append(item)
    return LabelBatch(labels=items)


def _invalid_item(validation_error: str) -> InvalidInput:
    """msgspec names a bad item by its path ($.labels[17].text_value): name it the same in the answer."""
    message, _, where = validation_error.partition(" - at `")
    found = _ITEM.match(where.rstrip("`"))
    if found is None:
        if where.startswith("$.labels"):
            return InvalidInput(f'send {{"labels": [...]}} with 1 to {MAX_BATCH} labels: {message}', "labels")
        return _invalid(validation_error)
    item, field = found.group(1), found.group(2)
    if missing := _MISSING.search(message):
        field = missing.group(1)
        return InvalidInput(f"labels[{item}].{field} is required", f"labels[{item}].{field}")
    name = f"labels[{item}]" + (f".{field}" if field else "")
    return InvalidInput(f"{name}: {message}", name)


def decode_label_patch(body: bytes, max_depth: int) -> LabelPatch:
    patch: LabelPatch = _decode(_update_decoder, body)
    _check_name(patch.output_resource_name)
    _check_text(patch.text_value, "text_value")
    return msgspec.structs.replace(patch, object_value=_object_text(patch.object_value, max_depth))
