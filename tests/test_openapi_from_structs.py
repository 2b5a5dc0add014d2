"""The served OpenAPI schema is generated from the msgspec Structs the API decodes and encodes: its components
are those Structs, field for field, and they stay within the documented contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from litestar.testing import TestClient

from service.http import openapi
from service.http.app import create_app
from service.http.errors import Error
from service.http.views import (
    Change,
    FeedEvent,
    FeedPage,
    GoldLabelChange,
    HistoryEntry,
    RunGoldLabel,
    RunSummary,
    Status,
)
from service.settings import load_settings
from service.usecases.audit import Digest
from service.usecases.commands import LabelBatch, LabelPatch, NewLabel
from service.usecases.labels import BatchItem, BatchOutcome
from service.usecases.log import ConsistencyProof, Cosignature, InclusionProof

CONTRACT = Path(__file__).resolve().parents[2] / "shared" / "contract" / "gold-labels.openapi.yaml"
STRUCTS = (
    *(RunGoldLabel, NewLabel, LabelPatch, HistoryEntry, Change, FeedEvent, FeedPage, Digest, Error, Status),
    *(InclusionProof, ConsistencyProof, Cosignature),
    *(LabelBatch, BatchOutcome, BatchItem),
    *(RunSummary, GoldLabelChange),
)
LABELS = "/v1/run/{run_id}/gold-labels"
LABEL = "/v1/run/{run_id}/gold-label/{gold_label_id}"


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict[str, Any]:
    """The OpenAPI document as the app serves it (no database needed)."""
    data = tmp_path_factory.mktemp("openapi")
    env = {
        "GOLDTRAIL_DATABASE_URL": f"sqlite:///{data / 'unused.sqlite3'}",
        "GOLDTRAIL_DATA_DIR": str(data),
        "GOLDTRAIL_JWT_SECRET": "s" * 32,
    }
    response = TestClient(app=create_app(load_settings(env))).get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def contract() -> dict[str, Any]:
    if not CONTRACT.is_file():
        pytest.skip(f"the contract {CONTRACT} is absent (it is there on CI)")
    return yaml.safe_load(CONTRACT.read_text())


def field_names(struct: type[msgspec.Struct]) -> set[str]:
    return {field.encode_name for field in msgspec.structs.fields(struct)}


def required_names(struct: type[msgspec.Struct]) -> set[str]:
    return {field.encode_name for field in msgspec.structs.fields(struct) if field.required}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def body_schema(served: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    return served["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]


def answer_schema(operation: dict[str, Any], status: str) -> dict[str, Any]:
    return operation["responses"][status]["content"]["application/json"]["schema"]


def types_of(schema: dict[str, Any]) -> set[str]:
    """The JSON types a schema admits, through anyOf/oneOf; a reference is an object."""
    if "$ref" in schema:
        return {"object"}
    if "type" in schema:
        kind = schema["type"]
        return {kind} if isinstance(kind, str) else set(kind)
    branches = schema.get("anyOf", []) + schema.get("oneOf", [])
    return set().union(*(types_of(branch) for branch in branches)) if branches else set()


def formats_of(schema: dict[str, Any]) -> set[str]:
    return {schema["format"]} if "format" in schema else set().union(*map(formats_of, schema.get("anyOf", [])))


def test_the_run_gold_label_component_has_exactly_the_struct_fields(served):
    component = served["components"]["schemas"]["RunGoldLabel"]
    assert set(component["properties"]) == field_names(RunGoldLabel)
    assert set(component["required"]) == required_names(RunGoldLabel)


@pytest.mark.parametrize("struct", STRUCTS, ids=lambda struct: struct.__name__)
def test_every_component_is_its_struct_field_for_field(served, struct):
    component = served["components"]["schemas"][struct.__name__]
    assert set(component["properties"]) == field_names(struct)
    assert set(component.get("required", [])) == required_names(struct)


def test_the_served_components_are_the_generated_ones_and_nothing_else(served):
    assert set(served["components"]["schemas"]) == set(openapi.SCHEMAS) == {struct.__name__ for struct in STRUCTS}
    assert served["components"]["schemas"]["RunGoldLabel"] == openapi.SCHEMAS["RunGoldLabel"]


def test_request_bodies_reference_the_command_structs(served):
    assert body_schema(served, LABELS, "post") == ref("NewLabel")
    assert body_schema(served, LABEL, "put") == ref("LabelPatch")
    assert served["paths"][LABELS]["post"]["requestBody"]["required"] is True


def test_label_answers_and_every_error_reference_their_structs(served):
    label = served["paths"][LABEL]
    assert answer_schema(label["get"], "200") == answer_schema(label["put"], "200") == ref("RunGoldLabel")
    assert answer_schema(served["paths"][LABELS]["post"], "201") == ref("RunGoldLabel")
    assert answer_schema(served["paths"][LABELS]["get"], "200") == {"type": "array", "items": ref("RunGoldLabel")}
    errors = [
        answer_schema(operation, status)
        for methods in served["paths"].values()
        for operation in methods.values()
        for status in operation["responses"]
        if int(status) >= 400
    ]
    assert errors and all(schema == ref("Error") for schema in errors)


def test_a_field_added_to_a_struct_shows_up_in_its_schema():
    class Audited(RunGoldLabel, frozen=True):
        reviewed_by: str | None = None

    (schema,), components = msgspec.json.schema_components([Audited], ref_template=openapi.REF)
    assert schema == ref("Audited")
    assert set(components["Audited"]["properties"]) == field_names(RunGoldLabel) | {"reviewed_by"}


def test_the_generated_schema_keeps_formats_and_limits(served):
    schemas = served["components"]["schemas"]
    label = schemas["RunGoldLabel"]["properties"]
    assert label["id"]["format"] == label["run_id"]["format"] == "uuid"
    assert label["created_at"]["format"] == label["updated_at"]["format"] == "date-time"
    assert label["object_value"] == {"type": ["object", "null"], "additionalProperties": True}
    for command in ("NewLabel", "LabelPatch"):
        name = schemas[command]["properties"]["output_resource_name"]
        limits = next(branch for branch in [name, *name.get("anyOf", [])] if branch.get("type") == "string")
        assert (limits["minLength"], limits["maxLength"]) == (1, 500)
    event = schemas["FeedEvent"]["properties"]
    assert event["label_id"]["format"] == "uuid" and event["recorded_at"]["format"] == "date-time"
    assert schemas["Error"]["required"] == ["error"]


def test_the_contract_run_gold_label_properties_are_served_with_compatible_types(served, contract):
    """An answer valid under the served schema is valid under the contract: every documented field is there,
    admitting no type (and no format) the contract does not."""
    documented = contract["components"]["schemas"]["RunGoldLabel"]
    component = served["components"]["schemas"]["RunGoldLabel"]
    missing = set(documented["properties"]) - set(component["properties"])
    assert not missing, f"documented but not served: {sorted(missing)}"
    for name, schema in documented["properties"].items():
        ours = component["properties"][name]
        assert types_of(ours) and types_of(ours) <= types_of(schema), f"{name}: {ours} is not within {schema}"
        assert formats_of(ours) == formats_of(schema), f"{name}: {ours} is not formatted as {schema}"
    assert set(documented["required"]) <= set(component["required"])


@pytest.mark.parametrize(("path", "method", "command"), [(LABELS, "post", "NewLabel"), (LABEL, "put", "LabelPatch")])
def test_the_served_request_bodies_accept_what_the_contract_documents(served, contract, path, method, command):
    """A body valid under the contract is valid under the served schema: each documented field admits at least
    the documented types, and nothing the contract leaves optional is required."""
    documented = contract["paths"][path.replace("{run_id}/gold-labels", "{id}/gold-labels")][method]
    documented = documented["requestBody"]["content"]["application/json"]["schema"]
    component = served["components"]["schemas"][command]
    for name, schema in documented["properties"].items():
        ours = component["properties"][name]
        assert types_of(schema) <= types_of(ours), f"{name}: {ours} refuses part of {schema}"
        for limit in ("minLength", "maxLength"):
            if limit in schema:
                branch = next(b for b in [ours, *ours.get("anyOf", [])] if b.get("type") == "string")
                assert branch[limit] == schema[limit], f"{name}: {limit} {branch.get(limit)} != {schema[limit]}"
    assert set(component["required"]) <= set(documented.get("required", []))
