"""Stand-in for kafka-python's `test/service.py`, which its sdist does not
ship: the integration fixtures import `ExternalService` (a broker someone
else runs, here Gregor) and `SpawnedService` (a broker the fixtures start
from a Kafka distribution, which this runner never asks for)."""

import logging

log = logging.getLogger(__name__)


class ExternalService:
    """A service that is already running at host:port."""

    def __init__(self, host, port):
        log.info("Using already running service at %s:%d", host, port)
        self.host = host
        self.port = port

    def start(self):
        pass

    def stop(self):
        pass

    def wait_for(self, pattern, timeout=30):
        # The broker serves before the suite starts.
        return True

    def dump_logs(self):
        pass


class SpawnedService:
    def __init__(self, args=None, env=None):
        raise RuntimeError(
            "the kafka-python suite runs against an external broker (KAFKA_URI); "
            "it cannot spawn one from a Kafka distribution here"
        )
