"""Errors of the MQTT side.

    SyncError (an edge.errors.EdgeError, so the CLI reports it in one line)
    ├── BrokerError      cannot connect: refused credentials, bad certificate, unreachable broker
    ├── PayloadError     a malformed MQTT payload (counted and dropped, never fatal)
    ├── OutboxError      the local durable outbox cannot be opened or written
    └── UpdateError      a model update that is rejected (reason in the message)
"""

from edge.errors import EdgeError


class SyncError(EdgeError):
    """Root of every error the MQTT side raises on purpose."""


class BrokerError(SyncError):
    """The broker refused us or cannot be reached."""


class PayloadError(SyncError):
    """A malformed MQTT payload."""


class OutboxError(SyncError):
    """The durable outbox cannot be opened or written."""


class UpdateError(SyncError):
    """A model update was rejected."""
