"""Push test helpers: credentials, and TLS from a throw-away CA (İYS only registers https receivers)."""

from __future__ import annotations

from iys_simulator.tls import ThrowawayTls, throwaway_tls

__all__ = ["PUSH_PASSWORD", "PUSH_USERNAME", "ThrowawayTls", "throwaway_tls"]

PUSH_USERNAME = "iys-push"
PUSH_PASSWORD = "push-s3cret"
