"""The HTTP side of ``oncodiff view``: a Starlette app over :class:`~oncodiff.view.service.Viewer` behind its
:class:`~oncodiff.view.guard.Guard` (Host, token, Origin and Content-Type checks), and ``serve``."""

from __future__ import annotations

import ipaddress
import math
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from oncodiff.errors import OncodiffError
from oncodiff.outputs import cohort_in_use
from oncodiff.view.folders import ViewerFolders
from oncodiff.view.guard import Guard, allowed_hosts, new_token
from oncodiff.view.jobs import QueueFull
from oncodiff.view.service import Viewer
from oncodiff.view.whatif import CACHE_LIMIT, WhatIf

STATIC = Path(__file__).parent / "static"


def create_app(folders: ViewerFolders, *, token: str | None, host: str = "127.0.0.1", port: int = 8765,
               cache_limit: int = CACHE_LIMIT) -> Starlette:
    """The app for one model, cohort and (optional) predictions folder, answering only requests that carry
    ``token`` (None: any) and name ``host``:``port`` or a loopback name with that port in their Host header."""
    viewer = Viewer(folders, cache_limit=cache_limit)
    routes = [
        Route("/", lambda request: FileResponse(STATIC / "index.html")),
        Route("/api/info", lambda request: JSONResponse(viewer.info())),
        Route("/api/cases", lambda request: JSONResponse(viewer.rows())),
        Route("/api/case", partial(_case, viewer)),
        Route("/api/predict", partial(_predict, viewer), methods=["POST"]),
        Route("/api/whatif", partial(_whatif, viewer), methods=["POST"]),
        Route("/api/jobs/{job_id}", partial(_job, viewer)),
        Route("/api/export", partial(_export, viewer)),
        Route("/files/{root}/{path:path}", partial(_file, folders)),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    guard = Middleware(Guard, token=token, hosts=allowed_hosts(host, port), port=port)
    app = Starlette(routes=routes, middleware=[guard])
    app.state.viewer = viewer
    return app


def _not_found(what: str) -> JSONResponse:
    return JSONResponse({"error": f"not found: {what}"}, status_code=404)


def _case(viewer: Viewer, request: Request) -> Response:
    key = request.query_params.get("key", "")
    try:
        return JSONResponse(viewer.case(key))
    except KeyError:
        return _not_found(f"case {key!r} (predict its patient first)")


async def _predict(viewer: Viewer, request: Request) -> Response:
    body = await _json(request)
    try:
        job = viewer.predict_patient(str(body.get("patient", "")))
    except QueueFull as e:
        return JSONResponse({"error": str(e)}, status_code=429)
    except OncodiffError as e:
        return JSONResponse({"error": str(e)}, status_code=400)
    return JSONResponse(job.to_dict(), status_code=202)


async def _whatif(viewer: Viewer, request: Request) -> Response:
    body = await _json(request)
    try:
        question = _question(body)
        job = viewer.whatif(question)
    except KeyError:
        return _not_found(f"case {body.get('key')!r}")
    except QueueFull as e:
        return JSONResponse({"error": str(e)}, status_code=429)
    except OncodiffError as e:
        return JSONResponse({"error": str(e)}, status_code=400)
    return JSONResponse(job.to_dict(), status_code=202)


def _question(body: dict) -> WhatIf:
    try:
        days = float(body.get("days"))
    except (TypeError, ValueError):
        raise OncodiffError(f"days since baseline = {body.get('days')!r}: give a number of days") from None
    clinical = body.get("clinical") or {}
    if not isinstance(clinical, dict):
        raise OncodiffError("clinical: expected an object of variable name -> value")
    days = float(math.floor(days + 0.5)) if math.isfinite(days) else math.nan  # whole days, as the cache keys them
    return WhatIf(key=str(body.get("key", "")), days=days,
                  response=str(body.get("response") or ""), clinical={str(k): str(v) for k, v in clinical.items()})


async def _json(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _job(viewer: Viewer, request: Request) -> Response:
    job = viewer.jobs.get(request.path_params["job_id"])
    return JSONResponse(job) if job is not None else _not_found("job")


def _export(viewer: Viewer, request: Request) -> Response:
    params = request.query_params
    try:
        path, name = viewer.export(params.get("set", ""), params.get("key", ""), params.get("layer", "mean"))
    except KeyError:
        return _not_found("prediction to export")
    return FileResponse(path, filename=name, media_type="application/gzip")


def _file(folders: ViewerFolders, request: Request) -> Response:
    path = folders.resolve(request.path_params["root"], request.path_params["path"])
    return FileResponse(path) if path is not None else _not_found("file")


def serve(folders: ViewerFolders, host: str = "127.0.0.1", port: int = 8765, token: bool = True,
          allow_remote: bool = False, cache_limit: int = CACHE_LIMIT) -> None:
    """Run the viewer until Ctrl+C; prints its address with the session's token. A host beyond loopback is
    refused unless ``allow_remote``; ``token`` False (--no-token) lets any local page or program in."""
    if not _loopback(host) and not allow_remote:
        raise OncodiffError(f"--host {host} would let other machines on the network reach the viewer, which serves "
                            "patients' scans, outcomes and the model's weights; use 127.0.0.1 (the default), or pass "
                            "--allow-remote if that is what you want (the token still guards it; see docs/viewer.md)")
    _check_port(host, port)
    with _exit_on_sigterm(), cohort_in_use(folders.cohort, "view"):  # synth --overwrite leaves it alone meanwhile
        _serve(folders, host, port, token, cache_limit)


@contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """SIGTERM ends the viewer as Ctrl+C does, running its cleanup (uvicorn re-raises the signal it caught once it
    has stopped; with the default handler the process would die without removing its cohort in-use record)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _serve(folders: ViewerFolders, host: str, port: int, token: bool, cache_limit: int) -> None:
    import uvicorn

    secret = new_token() if token else None
    app = create_app(folders, token=secret, host=host, port=port, cache_limit=cache_limit)
    if not _loopback(host):
        print(f"warning: --host {host} --allow-remote lets other machines on the network reach the viewer; anyone "
              "who gets its address with the token can read the scans it serves, and the token travels unencrypted "
              "(plain http)", file=sys.stderr, flush=True)
    if secret is None:
        print("warning: --no-token: any program on this machine, and any web page open in your browser that can "
              "reach this port, can read the scans and outcomes the viewer serves and start predictions",
              file=sys.stderr, flush=True)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)
    address = f"http://{shown}:{port}/" + (f"?token={secret}" if secret else "")
    print(f"oncodiff view: open {address} (Ctrl+C to stop; what-if results are cached in {folders.cache})",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _check_port(host: str, port: int) -> None:
    """A clear error, before anything loads, when the address is taken (another viewer, say)."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise OncodiffError(f"--host {host} --port {port}: cannot listen there ({e.strerror}); "
                            "pass another --port, or stop what uses it") from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
