"""`rnnlab serve`: the playground and trained runs in a browser, and the classifier as a JSON API.

    app.py         the Starlette application: pages, routes, errors
    limits.py      what a request may ask (body size, texts, characters, model sizes)
    runs.py        runs loaded once at start: predict, trace (a_t per layer and direction), the word tree
    playground.py  POST /explain, from `rnnlab.teach.explain`
    static/        the pages: plain HTML, ES modules and SVG, nothing fetched from elsewhere
"""

from rnnlab.serve.app import create_app
from rnnlab.serve.runs import ServeError, load_runs

__all__ = ["ServeError", "create_app", "load_runs"]
