"""The ASGI application: the pages, the JSON API and its errors.

    app = create_app(load_runs(["runs/emotion"]))     # serve with uvicorn

    GET  /                  the playground (no run needed)
    GET  /run/NAME          a loaded run's page
    GET  /docs              the API, described
    GET  /healthz           {"status": "ok", "runs": [names]}
    GET  /runs              {"runs": [what each run is]};   GET /runs/NAME: one of them
    POST /predict           {"texts": [...], "run"?: NAME} -> {"predictions": [{"label", "probabilities"}]}
    POST /trace             {"text": "...", "run"?: NAME}  -> {"tokens", "layers": [{"layer", "direction", "a"}], "y"}
    POST /explain           {"cell", "k", "p", "T", "B"?, "q"?, "layers"?, "every_step"?} -> `explain --json` and more
    POST /runs/NAME/predict, /runs/NAME/trace: the same, the run named in the path

"run" may be left out when one run is loaded. A run is a name given at start, never a path: no request
reads a file or loads a run. Errors are {"error": "one line"} with 400, 404, 405, 413 or 422.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from rnnlab.serve import limits, playground
from rnnlab.serve.batching import Batcher
from rnnlab.serve.limits import RequestError

STATIC = Path(__file__).parent / "static"


def create_app(runs: dict | None = None) -> Starlette:
    """The application serving `runs` ({name: `runs.Classifier` or `runs.Sequence`}, loaded already)."""
    runs = dict(runs or {})
    batchers = {name: Batcher(run.predict) for name, run in runs.items()}

    def pick(body: dict, name: str | None = None):
        if name is None:
            name = body.get("run")
        if name is None:
            if len(runs) == 1:
                return next(iter(runs.values()))
            if not runs:
                raise RequestError(404, "no run is loaded: start the server with `rnnlab serve RUN`")
            raise RequestError(422, f'{len(runs)} runs are loaded ({", ".join(runs)}): name one with "run"')
        if not isinstance(name, str):
            raise RequestError(422, f'"run" must be a run\'s name (a string); got {type(name).__name__}')
        if name not in runs:
            raise RequestError(404, f"no run named {name!r}; loaded: {', '.join(runs) or 'none'}")
        return runs[name]

    def only(body: dict, fields: tuple[str, ...], where: str) -> None:
        unknown = sorted(set(body) - set(fields))
        if unknown:
            raise RequestError(422, f"unknown field {unknown[0]!r}; {where} reads {', '.join(fields)}")

    async def predict(request: Request) -> JSONResponse:
        body = await limits.read_json(request)
        only(body, ("texts", "run"), "/predict")
        texts = limits.texts(body)
        run = pick(body, request.path_params.get("name"))
        if run.kind != "classifier":
            run.predict(texts)  # refuses, saying why
        return JSONResponse({"run": run.name, "predictions": await batchers[run.name](texts)})

    async def trace(request: Request) -> JSONResponse:
        body = await limits.read_json(request)
        only(body, ("text", "run"), "/trace")
        text = limits.text(body)
        run = pick(body, request.path_params.get("name"))
        return JSONResponse({"run": run.name, **await run_in_threadpool(run.trace, text)})

    async def explain(request: Request) -> JSONResponse:
        body = await limits.read_json(request)
        return JSONResponse(await run_in_threadpool(playground.explanation, body))

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "runs": list(runs)})

    infos = {name: run.info() for name, run in runs.items()}

    async def list_runs(request: Request) -> JSONResponse:
        return JSONResponse({"runs": [{k: v for k, v in i.items() if k != "tree"} for i in infos.values()],
                             "cells": playground.cell_names(), "limits": _limits()})

    async def one_run(request: Request) -> JSONResponse:
        return JSONResponse(infos[pick({}, request.path_params["name"]).name])

    async def run_page(request: Request) -> FileResponse:
        pick({}, request.path_params["name"])
        return FileResponse(STATIC / "run.html")

    def page(name: str):
        async def endpoint(request: Request) -> FileResponse:
            return FileResponse(STATIC / name)
        return endpoint

    routes = [
        Route("/", page("playground.html")),
        Route("/docs", page("docs.html")),
        Route("/run/{name}", run_page),
        Route("/healthz", healthz),
        Route("/runs", list_runs),
        Route("/runs/{name}", one_run),
        Route("/predict", predict, methods=["POST"]),
        Route("/trace", trace, methods=["POST"]),
        Route("/explain", explain, methods=["POST"]),
        Route("/runs/{name}/predict", predict, methods=["POST"]),
        Route("/runs/{name}/trace", trace, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    handlers = {RequestError: _refused, HTTPException: _http_error, Exception: _internal}
    return Starlette(routes=routes, exception_handlers=handlers)


def _limits() -> dict:
    return {"body_bytes": limits.MAX_BODY, "texts": limits.MAX_TEXTS, "characters": limits.MAX_CHARS,
            "sizes": limits.MAX_SIZE, "parameters": limits.MAX_PARAMETERS}


async def _refused(request: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    message = {404: f"no such page: {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)
