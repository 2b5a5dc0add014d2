"""Routes of the verifiable log (DESIGN.md §3.1): signed checkpoints, the log's verifier key, inclusion and
consistency proofs, witnesses' cosignatures, and a label version's proof bundle."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery, QueryParameter

from service.http import openapi
from service.http.auth import AUDIT, WITNESS, requires
from service.http.consistency import reads_for
from service.http.input import canonical_uuid, database, json_body, parse_count, settings
from service.http.views import encode
from service.usecases import log
from service.usecases.commands import InvalidInput

TEXT = "text/plain; charset=utf-8"


def _signer(request: Request) -> log.LogSigner:
    signer = request.app.state.log_signer
    if signer is None:
        raise log.NoCheckpointKey()
    return signer


LARGEST = 2**63 - 1  # sizes and indexes are signed 64-bit integers in both databases


def _required(value: str | None, name: str, minimum: int) -> int:
    if value is None:
        raise InvalidInput(f"{name} is required", name)
    return parse_count(value, name, minimum=minimum, maximum=LARGEST)


@get("/audit/checkpoint", operation_id="getCheckpoint", operation_class=openapi.CHECKPOINT, guards=[requires(AUDIT)])
async def checkpoint(request: Request, tree_size: FromQuery[str | None] = None) -> Response[bytes]:
    """The latest signed checkpoint of the account's log (or the one of `tree_size`), with cosignatures."""
    _signer(request)
    size = parse_count(tree_size, "tree_size", minimum=0, maximum=LARGEST)
    text = await log.checkpoint(reads_for(request), request.user.account, size)
    return Response(content=text.encode(), media_type=TEXT)


@get("/audit/key", operation_id="getLogKey", operation_class=openapi.LOG_KEY, guards=[requires(AUDIT)])
async def log_key(request: Request) -> Response[bytes]:
    """The verifier key of the account's log, in signed-note form."""
    return Response(content=(_signer(request).vkey(request.user.account) + "\n").encode(), media_type=TEXT)


@get(
    "/audit/proof/inclusion",
    operation_id="getInclusionProof",
    operation_class=openapi.INCLUSION,
    guards=[requires(AUDIT)],
)
async def inclusion_proof(
    request: Request, log_index: FromQuery[str | None] = None, tree_size: FromQuery[str | None] = None
) -> Response[bytes]:
    index, size = _required(log_index, "log_index", 0), _required(tree_size, "tree_size", 0)
    proof = await log.inclusion(reads_for(request), request.user.account, index, size)
    return Response(content=encode(proof), media_type="application/json")


@get(
    "/audit/proof/consistency",
    operation_id="getConsistencyProof",
    operation_class=openapi.CONSISTENCY,
    guards=[requires(AUDIT)],
)
async def consistency_proof(
    request: Request,
    old_size: Annotated[str | None, QueryParameter(name="from")] = None,
    new_size: Annotated[str | None, QueryParameter(name="to")] = None,
) -> Response[bytes]:
    start, end = _required(old_size, "from", 1), _required(new_size, "to", 1)
    if start > end:
        raise InvalidInput(f"from ({start}) must not be larger than to ({end}): a log only grows", "from")
    proof = await log.consistency(reads_for(request), request.user.account, start, end)
    return Response(content=encode(proof), media_type="application/json")


_cosignature = msgspec.json.Decoder(log.Cosignature)


@post(
    "/audit/checkpoint/cosignatures",
    operation_id="addCosignature",
    operation_class=openapi.COSIGNATURE,
    guards=[requires(WITNESS)],
    status_code=204,
)
async def add_cosignature(request: Request) -> None:
    try:
        given = _cosignature.decode(await json_body(request))
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise InvalidInput(f'send {{"tree_size": N, "cosignature": "— <witness> <signature>"}}: {error}') from None
    _signer(request)
    witnesses = settings(request).witness_keys
    await log.add_cosignature(database(request), witnesses, request.user.account, given.tree_size, given.cosignature)


@get(
    "/run/{run_id:str}/gold-label/{gold_label_id:str}/proof",
    operation_id="getRunGoldLabelProof",
    operation_class=openapi.PROOF_BUNDLE,
    guards=[requires(AUDIT)],
)
async def label_proof(
    request: Request, run_id: FromPath[str], gold_label_id: FromPath[str], version: FromQuery[str | None] = None
) -> Response[bytes]:
    run, label = canonical_uuid(run_id, "run_id"), canonical_uuid(gold_label_id, "gold_label_id")
    bundle = await log.label_proof(
        reads_for(request),
        request.app.state.log_signer,
        request.user.account,
        run,
        label,
        _required(version, "version", 1),
    )
    return Response(content=encode(bundle), media_type="application/json")


LOG_ROUTES = [checkpoint, log_key, inclusion_proof, consistency_proof, add_cosignature, label_proof]
