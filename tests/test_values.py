"""Values are stored losslessly: whatever JSON object a client sends is what every later read returns,
key order, integers of any size, decimals digit for digit and all of Unicode included."""

from __future__ import annotations

import uuid

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import auth, label_url, labels_url

encode = msgspec.json.Encoder(decimal_format="number").encode

# Any Unicode scalar but U+0000 (refused on purpose) and lone surrogates (not encodable as UTF-8).
text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=30)
numbers = st.one_of(
    st.integers(min_value=-(10**60), max_value=10**60),
    st.decimals(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), text, numbers)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=25,
)
objects = st.dictionaries(text, json_values, max_size=6)


def send_and_read(client, object_json: bytes) -> list[bytes]:
    """Create a label with this object value, then read it back four ways; returns the raw responses."""
    run_id = str(uuid.uuid4())
    body = b'{"output_resource_name": "o", "object_value": ' + object_json + b"}"
    headers = {**auth(), "Content-Type": "application/json"}
    created = client.post(labels_url(run_id), content=body, headers=headers)
    assert created.status_code == 201, created.text
    label_id = created.json()["id"]
    return [
        created.content,
        client.get(label_url(run_id, label_id), headers=auth()).content,
        client.put(label_url(run_id, label_id), content=b'{"object_value_is_partial": true}', headers=headers).content,
        client.get(labels_url(run_id), headers=auth()).content,
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=objects)
def test_object_values_round_trip_exactly(client, value):
    sent = encode(value)
    for read in send_and_read(client, sent):
        assert b'"object_value":' + sent + b',"object_value_is_partial"' in read, (sent, read)


def test_extreme_numbers_keep_every_digit(client):
    sent = (
        b'{"z_first":1,"big":123456789012345678901234567890123456789012345678901234567890,'
        b'"negative":-100000000000000000000000000000000000000000000000000000000000000000000000000000000,'
        b'"pi":3.14159265358979323846264338327950288419716939937510,"trailing_zeros":1.500,'
        b'"tiny":1e-400,"huge":1E+400,"negative_zero":-0,"escaped":"\\u00e9\\n",' + '"a_last":"ü 🚀 中文"}'.encode()
    )
    for read in send_and_read(client, sent):
        assert b'"object_value":' + sent + b"," in read


def test_only_insignificant_whitespace_is_dropped(client):
    for read in send_and_read(client, b'{ "k" : 1 ,\n "l" : [ 2.0 , "a b" ] }'):
        assert b'"object_value":{"k":1,"l":[2.0,"a b"]},' in read


@pytest.mark.parametrize("nested", [b'{"k": 1, "k": 2}', b'{"a": [{"x": 1, "y": 2, "x": "\\u0000"}]}'])
def test_a_key_twice_in_one_object_is_400(client, run_id, nested):
    body = b'{"output_resource_name": "o", "object_value": ' + nested + b"}"
    response = client.post(labels_url(run_id), content=body, headers={**auth(), "Content-Type": "application/json"})
    assert response.status_code == 400 and "twice" in response.json()["error"]


def test_integer_beyond_the_parsers_digit_limit_is_400_not_500(client, run_id):
    body = b'{"output_resource_name": "o", "object_value": {"n": ' + b"9" * 5000 + b"}}"
    response = client.post(labels_url(run_id), content=body, headers={**auth(), "Content-Type": "application/json"})
    assert response.status_code == 400 and "object_value" in response.json()["error"]


def test_long_text_values_round_trip(client, run_id):
    value = "α" * 100_000
    created = client.post(labels_url(run_id), json={"output_resource_name": "o", "text_value": value}, headers=auth())
    assert created.status_code == 201
    assert client.get(label_url(run_id, created.json()["id"]), headers=auth()).json()["text_value"] == (value)
