"""The standalone collector: the beacon endpoint as a WSGI app of its own, without the host's hooks.

``POST {prefix}/beacon`` normally runs inside the host app, through every ``before_request``,
``after_request`` and signal receiver the host and its extensions registered (CSRF checks,
session handling, APM tracing). A site where beacons are most of the traffic can instead send
them to a small Flask app built from the same tracker: the same view, validation, rate limit,
store and answers (``204``, ``4xx`` with a JSON body, ``503``), and ``GET {prefix}/snippet.js``.
It has no login manager, so every beacon it takes is stored anonymously, under its visitor id;
the visitor's next login (or next authenticated request carrying pending touches) claims them.

Two ways to run it::

    # in the same process: requests for {prefix}/beacon go to the collector
    from flask_utm_tracker.collector import mount_collector
    mount_collector(app)

    # or as a gunicorn pool of its own, behind a proxy routing {prefix}/beacon to it
    # collector_app.py:  app = make_collector(create_app())
    gunicorn -w 4 --threads 8 -k gthread collector_app:app
"""

from __future__ import annotations

import typing as t

from flask import Flask

from .extension import UTMTracker
from .views import make_blueprint

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


def make_collector(app: Flask) -> Flask:
    """A Flask app serving the beacon and ``snippet.js`` of the tracker registered on ``app``,
    with ``app``'s configuration and database, and nothing else.

    :raises RuntimeError: no tracker is registered on ``app``.
    """
    tracker: UTMTracker = UTMTracker.state(app).tracker
    collector = Flask(__name__)
    collector.config.from_mapping(app.config)
    tracker.db.init_app(collector)
    settings = tracker.register_state(collector)
    collector.register_blueprint(make_blueprint(tracker), url_prefix=settings.url_prefix or None)
    return collector


def mount_collector(app: Flask) -> Flask:
    """Send ``app``'s requests for ``{prefix}/beacon`` to a collector (:func:`make_collector`)
    before ``app`` sees them; every other request goes to ``app`` as before. Middleware wrapped
    around ``app.wsgi_app`` afterwards (``ProxyFix``) applies to both.

    :return: the collector.
    """
    collector = make_collector(app)
    path = UTMTracker.settings(collector).url_prefix + "/beacon"
    host = app.wsgi_app

    def dispatch(environ: WSGIEnvironment, start_response: StartResponse) -> t.Iterable[bytes]:
        if environ.get("PATH_INFO") == path:
            return collector.wsgi_app(environ, start_response)
        return host(environ, start_response)

    app.wsgi_app = dispatch  # type: ignore[method-assign]
    return collector
