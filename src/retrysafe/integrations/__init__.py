"""Exception handlers that give a framework's own errors the one envelope, and a uvicorn protocol.

Mounted with :class:`retrysafe.asgi.RetrySafe`, an app's 404s, 405s, validation
errors and unhandled exceptions leave in the same ``{"errors": [...]}`` shape as
the pipeline's. One module per framework (:mod:`.starlette`, :mod:`.fastapi`,
:mod:`.litestar`), each importing only its framework; the errors themselves are
built, framework-neutral, in :mod:`.http_errors`. :mod:`.uvicorn` holds the HTTP
protocol ``retrysafe serve`` runs uvicorn with (a response's head and short body in one
write), for apps that serve themselves with uvicorn.
"""
