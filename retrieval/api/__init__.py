"""HTTP API and search page, split by job:

* `app`: the app factory `create_app` and the server entry point `run_server`
* `routes`: the routes; `deps`: their dependencies; `errors`: error responses
* `middleware`: body-size limit and bearer auth; `holder`: the live, reloadable searcher
* `testing`: `serve_in_thread` for tests and benchmarks
The page's HTML is rendered by `retrieval.page`, beside the text rendering in `retrieval.render`.
"""

from retrieval.api.app import create_app, run_server
from retrieval.api.holder import SearcherHolder, warm_up
from retrieval.api.testing import serve_in_thread

__all__ = ["SearcherHolder", "create_app", "run_server", "serve_in_thread", "warm_up"]
