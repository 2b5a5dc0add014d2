"""The console's pages: runs, a run (now or as of a time), the changes between two times, a label's timeline,
activity and integrity, plus signing in and out. Each handler reads its query, calls the use cases that the
API's routes call, and renders one template; nothing here writes."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Request, get, post
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Redirect, Template

from service.http.auth import Principal
from service.http.consistency import reads_for
from service.http.console import chart, forms
from service.http.console.present import value_change, value_of
from service.http.console.session import (
    PATH,
    cleared_cookie,
    principal_of,
    safe_next,
    same_origin,
    session_cookie,
    signed_in,
)
from service.http.input import canonical_uuid
from service.http.runs import label_cursor, search_text
from service.usecases import activity, audit, integrity, runs, timeline
from service.usecases.commands import InvalidInput

RUNS_PAGE, LABELS_PAGE, CHANGES_PAGE, EVENTS_PAGE, TIMELINE_PAGE = 50, 100, 100, 100, 100


def page(request: Request, name: str, principal: Principal | None, status: int = 200, **context: Any) -> Template:
    """A console page: the template with what every page shows (who is signed in, which page this is)."""
    return Template(
        template_name=name,
        context={"principal": principal, "here": request.url.path, "query": request.query_params, **context},
        status_code=status,
        media_type="text/html",
    )


def link(path: str, **query: Any) -> str:
    present = {name: value for name, value in query.items() if value not in (None, "")}
    return f"{path}?{urlencode(present)}" if present else path


# Signing in and out -------------------------------------------------------------------------------------


@get("/", name="console-home")
async def home() -> Redirect:
    return Redirect(f"{PATH}/runs", status_code=303)


@get("/sign-in")
async def sign_in_page(request: Request, next: FromQuery[str | None] = None) -> Template:
    return page(request, "sign_in.html", None, next=safe_next(next), problem=None)


@post("/sign-in", status_code=303)
async def sign_in(request: Request) -> Redirect:
    """Check the pasted token (SignInRefused shows the form again, saying why) and keep it in the cookie."""
    same_origin(request)
    form = await request.form()
    token = str(form.get("token") or "").strip()
    principal_of(token, request.app.state.token_verifier)
    redirect = Redirect(safe_next(str(form.get("next") or "")), status_code=303)
    redirect.cookies.append(session_cookie(request, token))
    return redirect


@post("/sign-out", status_code=303)
async def sign_out(request: Request) -> Redirect:
    same_origin(request)
    redirect = Redirect(f"{PATH}/sign-in", status_code=303)
    redirect.cookies.append(cleared_cookie(request))
    return redirect


# Runs ---------------------------------------------------------------------------------------------------


@get("/runs")
async def runs_page(request: Request, q: FromQuery[str | None] = None, after: FromQuery[str | None] = None) -> Template:
    principal = signed_in(request)
    search = search_text(q)
    cursor = forms.decode_cursor(after, str)
    found = await runs.list_runs(reads_for(request), principal.account, cursor, RUNS_PAGE, search)
    following = (
        None if found.following is None else link(request.url.path, q=search, after=forms.encoded(found.following))
    )
    return page(
        request,
        "runs.html",
        principal,
        runs=found.runs,
        search=search or "",
        following=following,
        paged=after is not None,
    )


@get("/run/{run_id:str}")
async def run_page(
    request: Request, run_id: FromPath[str], as_of: FromQuery[str | None] = None, after: FromQuery[str | None] = None
) -> Template:
    principal = signed_in(request)
    run = canonical_uuid(run_id, "run_id")
    at = forms.moment(as_of, "as_of")
    db = reads_for(request)
    labels = await runs.labels_page(db, principal.account, run, at, label_cursor(after), LABELS_PAGE)
    totals = await runs.run_totals(db, principal.account, run)
    as_of_text = forms.shown_moment(at)
    following = None
    if labels.following is not None:
        following = link(request.url.path, as_of=as_of_text, after=forms.encoded(labels.following))
    return page(
        request,
        "run.html",
        principal,
        run_id=run,
        at=at,
        as_of=as_of_text,
        labels=[(state, value_of(state)) for state in labels.labels],
        live=labels.live,
        totals=totals,
        following=following,
        paged=after is not None,
    )


@get("/run/{run_id:str}/changes")
async def changes_page(
    request: Request,
    run_id: FromPath[str],
    start: Annotated[str | None, QueryParameter(name="from")] = None,
    end: Annotated[str | None, QueryParameter(name="to")] = None,
    after: FromQuery[str | None] = None,
) -> Template:
    """The run's changes between two times, whichever order they were given in (the earlier is "from")."""
    principal = signed_in(request)
    run = canonical_uuid(run_id, "run_id")
    first, second = forms.moment(start, "from"), forms.moment(end, "to")
    if first is None:
        raise InvalidInput("give the time to compare from", "from")
    if second is None:
        raise InvalidInput("give the time to compare with", "to")
    since, until = sorted((first, second))
    found = await runs.run_changes(
        reads_for(request), principal.account, run, since, until, label_cursor(after), CHANGES_PAGE
    )
    shown = []
    for change in found.changes:
        before = None if change.before is None else value_of(change.before)
        after_value = None if change.after is None else value_of(change.after)
        shown.append((change, value_change(before, after_value)))
    following = None
    if found.following is not None:
        following = link(
            request.url.path,
            **{"from": forms.shown_moment(since), "to": forms.shown_moment(until)},
            after=forms.encoded(found.following),
        )
    return page(
        request,
        "changes.html",
        principal,
        run_id=run,
        since=forms.shown_moment(since),
        until=forms.shown_moment(until),
        changes=shown,
        following=following,
        paged=after is not None,
    )


# A label ------------------------------------------------------------------------------------------------


@get("/run/{run_id:str}/label/{label_id:str}")
async def label_page(
    request: Request,
    run_id: FromPath[str],
    label_id: FromPath[str],
    newest: FromQuery[str | None] = None,
    version: FromQuery[str | None] = None,
) -> Template:
    principal = signed_in(request)
    run, label = canonical_uuid(run_id, "run_id"), canonical_uuid(label_id, "label_id")
    db = reads_for(request)
    chosen_version = forms.version_field(version, "version")
    found = await timeline.timeline(
        db, principal.account, run, label, forms.version_field(newest, "newest"), TIMELINE_PAGE
    )
    state = None
    if chosen_version is not None:
        state = await timeline.state_at_version(db, principal.account, run, label, chosen_version)
    moments = [(moment, value_change(moment.before, moment.after)) for moment in found.moments]
    last = found.label.version
    newer = None if found.newest >= last else link(request.url.path, newest=min(last, found.newest + TIMELINE_PAGE))
    older = None if found.oldest <= 1 else link(request.url.path, newest=found.oldest - 1)
    return page(
        request,
        "label.html",
        principal,
        run_id=run,
        label=found.label,
        current=value_of(found.label),
        moments=moments,
        chosen_version=chosen_version,
        state=state,
        state_value=None if state is None else value_of(state),
        newer=newer,
        older=older,
        first_shown=found.oldest,
        last_shown=found.newest,
        signer=request.app.state.log_signer is not None,
    )


# Activity -----------------------------------------------------------------------------------------------


@get("/activity")
async def activity_page(request: Request, after: FromQuery[str | None] = None) -> Template:
    """The account's events, newest first, filtered by actor, type, run and time (query parameters actor, type,
    run, since, until), with the chart of changes per day by actor."""
    principal = signed_in(request)
    chosen = forms.filter_of(request)
    db = reads_for(request)
    found = await activity.activity_page(db, principal.account, chosen, forms.activity_cursor(after), EVENTS_PAGE)
    drawn = await activity.changes_per_day(db, principal.account, chosen)
    query = forms.filter_query(chosen)
    following = (
        None if found.following is None else link(request.url.path, **query, after=forms.encoded(found.following))
    )
    title = f"Changes per day by actor, {drawn.days[0]} to {drawn.days[-1]} (UTC)" if drawn.days else "Changes per day"
    return page(
        request,
        "activity.html",
        principal,
        chosen=chosen,
        chosen_query=query,
        event_types=activity.EVENT_TYPES,
        events=found.events,
        following=following,
        paged=after is not None,
        chart=chart.svg(drawn, title),
        chart_series=chart.series(drawn),
        chart_days=drawn,
        exports={kind: link(f"{PATH}/export.{kind}", **query) for kind in ("csv", "ndjson")},
    )


# Integrity ----------------------------------------------------------------------------------------------


@get("/integrity")
async def integrity_page(request: Request, verify: FromQuery[str | None] = None) -> Template:
    """The latest checkpoint, a verification of the whole log on request, and the downloads (the exports take
    the activity filter's query parameters)."""
    principal = signed_in(request)
    chosen = forms.filter_of(request)
    db = reads_for(request)
    signer = request.app.state.log_signer
    state = await integrity.log_state(db, signer, principal.account)
    report = digest = None
    if verify and signer is not None and state.checkpoint is not None:
        report = await integrity.verify_account_log(db, signer, principal.account)
    elif verify:
        digest = await audit.log_digest(db, principal.account, tree_size=None, position=None)
    query = forms.filter_query(chosen)
    return page(
        request,
        "integrity.html",
        principal,
        state=state,
        signer=signer is not None,
        report=report,
        digest=digest,
        chosen=chosen,
        chosen_query=query,
        event_types=activity.EVENT_TYPES,
        exports={kind: link(f"{PATH}/export.{kind}", **query) for kind in ("csv", "ndjson")},
    )


PAGES = [
    home,
    sign_in_page,
    sign_in,
    sign_out,
    runs_page,
    run_page,
    changes_page,
    label_page,
    activity_page,
    integrity_page,
]
