"""clipsearch's Celery app as a module, for Celery's own tools and the monitoring built on them:

    celery -A clipsearch.indexer.worker_app inspect ping
    celery -A clipsearch.indexer.worker_app inspect active
    celery -A clipsearch.indexer.worker_app events
    celery -A clipsearch.indexer.worker_app flower      (Flower installed)
    celery-exporter --broker-url=$CLIPSEARCH_BROKER_URL   (reads the task events workers send)

The app is built, when this module is imported, from the same settings tree (the ``CLIPSEARCH_*``
environment) as ``clipsearch worker``: the same broker, queue prefix, queues and tasks. Importing
it connects to nothing and loads no model. Run workers with ``clipsearch worker`` (it recovers
unfinished jobs from the catalog and sweeps stalled ones before it consumes), not with
``celery worker`` on this module.

Remote control (``inspect``, ``control``) needs a broker with broadcast support: Redis or
RabbitMQ. The embedded SQLite broker has none, so there ``inspect ping`` finds no worker.
"""

from __future__ import annotations

from .settings import LibrarySettings
from .worker import create_worker_app

app = create_worker_app(LibrarySettings.from_env().worker_config())

__all__ = ["app"]
