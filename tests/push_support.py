"""Push test helpers: credentials, and TLS from a throw-away CA (İYS only registers https receivers)."""

from __future__ import annotations

from iys_simulator.tls import ThrowawayTls, throwaway_tls

__all__ = ["DOCUMENTED_TEST_PAYLOAD", "PUSH_PASSWORD", "PUSH_USERNAME", "ThrowawayTls", "throwaway_tls"]

PUSH_USERNAME = "iys-push"
PUSH_PASSWORD = "push-s3cret"

#: İYS's fixed registration test payload, as its documentation prints it (iys-reconciliation.md §7).
DOCUMENTED_TEST_PAYLOAD = {
    "list": [
        {
            "iysCode": 121212,
            "brandCode": 121212,
            "consentDate": "2015-05-01 15:00:00",
            "creationDate": "2015-05-01 15:00:00",
            "source": "IYS_MOBIL",
            "recipient": "pushtest@iys.org.tr",
            "recipientType": "BIREYSEL",
            "status": "ONAY",
            "type": "EPOSTA",
            "transactionId": "e52ee30512adfcd2a41fb3b4682f5bd61eee5b1c92bda665fc0b7e56644d429d",
        }
    ]
}
