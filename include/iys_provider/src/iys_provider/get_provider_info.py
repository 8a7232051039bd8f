"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point.

The connection form is declared here (``conn-fields``), not on the hook: Airflow 3.2+ reads it
without importing the hook and deprecates the ``get_connection_form_widgets`` hook methods. The
defaults it shows are read from :class:`~iys_provider.hooks.settings.IysConnectionSettings`, the
model the hook parses the connection with, so the form and the hook cannot disagree.
"""

from __future__ import annotations

from iys_provider import __version__
from iys_provider.config import provider_config
from iys_provider.hooks.settings import DEFAULT_BASE_URL, EGRESS_LABEL_PATTERN, extra_default

#: The public building blocks, by module (base modules left out: they hold no task of their own).
OPERATOR_MODULES = tuple(
    f"iys_provider.operators.{name}"
    for name in (
        "changes",
        "consent_updates",
        "initial_sync",
        "leavers",
        "new_users",
        "outbox_approval",
        "pool_check",
        "push_inbox",
        "push_registration",
        "reconciliation",
        "report",
        "retention",
    )
)
SENSOR_MODULES = ("iys_provider.sensors.batch_results", "iys_provider.sensors.reconciliation")
TRIGGER_MODULES = (
    "iys_provider.triggers.batch_results",
    "iys_provider.triggers.push_inbox",
    "iys_provider.triggers.reconciliation_hash",
)


def get_provider_info() -> dict:
    return {
        "package-name": "iys-airflow-provider",
        "name": "İYS (İleti Yönetim Sistemi)",
        "description": "Keep a brand's PostgreSQL consent tables in sync with İYS, Turkey's "
        "registry of consent for commercial SMS, calls and e-mail (İYS Sync Mode).",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "İYS",
                "external-doc-url": "https://apidocs.iys.org.tr/",
                "tags": ["service"],
            }
        ],
        "operators": [{"integration-name": "İYS", "python-modules": list(OPERATOR_MODULES)}],
        "sensors": [{"integration-name": "İYS", "python-modules": list(SENSOR_MODULES)}],
        "hooks": [{"integration-name": "İYS", "python-modules": ["iys_provider.hooks.iys"]}],
        # `airflow providers triggers` lists these; the triggerer imports them by their serialized path.
        "triggers": [{"integration-name": "İYS", "python-modules": list(TRIGGER_MODULES)}],
        # The [iys] section (iys_provider.config): `airflow config list` shows its options and defaults.
        "config": provider_config(),
        # The İYS page in the Airflow UI. Airflow loads provider plugins only with
        # [core] lazy_discover_providers = False; otherwise plugins/iys_dashboard.py registers it.
        "plugins": [{"name": "iys", "plugin-class": "iys_provider.plugins.iys_plugin.IysPlugin"}],
        # The iys:// asset URIs: the consents assets (iys://consents/…) and, for hook lineage, the
        # brand's consents at one İYS API (iys://<API host>/<iys_code>/<brand_code>); see iys_provider.lineage.
        "asset-uris": [
            {
                "schemes": ["iys"],
                "handler": "iys_provider.lineage.sanitize_uri",
                "factory": "iys_provider.lineage.create_asset",
                "to_openlineage_converter": "iys_provider.lineage.convert_asset_to_openlineage",
            }
        ],
        "connection-types": [
            {
                "connection-type": "iys",
                "hook-class-name": "iys_provider.hooks.iys.IysHook",
                "hook-name": "İYS",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {
                        "host": "API base URL",
                        "login": "API username",
                        "password": "API password",
                    },
                    "placeholders": {
                        "host": DEFAULT_BASE_URL,
                        "login": "API user created in the İYS panel (hs.iys.org.tr)",
                    },
                },
                "conn-fields": {
                    "iys_code": {
                        "label": "İYS code",
                        "description": "Your service provider (HS) İYS number, as shown in the İYS panel.",
                        "schema": {"type": "integer", "minimum": 1},
                    },
                    "brand_code": {
                        "label": "Brand code",
                        "description": "The brand's İYS number. For a single-brand account it equals the İYS code.",
                        "schema": {"type": "integer", "minimum": 1},
                    },
                    "rate_limit_per_second": {
                        "label": "Request rate limit (per second)",
                        "description": "Aggregate requests per second this package may send, shared by every "
                        "task and worker. İYS allows 10 per second per IP; keep headroom.",
                        "schema": {
                            "type": ["number", "null"],
                            "minimum": 0.1,
                            "maximum": 10,
                            "default": extra_default("rate_limit_per_second"),
                        },
                    },
                    "auth_requests_per_hour": {
                        "label": "Token requests per hour",
                        "description": "Hard cap on token requests per hour from this installation. İYS blocks "
                        "the IP for an hour (H084) above its limit.",
                        "schema": {
                            "type": ["integer", "null"],
                            "minimum": 1,
                            "maximum": 100,
                            "default": extra_default("auth_requests_per_hour"),
                        },
                    },
                    "auth_block_seconds": {
                        "label": "Token block wait (s)",
                        "description": "After İYS blocks token requests (H084), make no token request at all "
                        "for this long. İYS blocks for an hour and restarts the hour on every token call made "
                        "during the block; lower it only for a test server with a shorter block.",
                        "schema": {
                            "type": ["integer", "null"],
                            "minimum": 0,
                            "default": extra_default("auth_block_seconds"),
                        },
                    },
                    "batch_result_delay_seconds": {
                        "label": "Batch result delay (s)",
                        "description": "Wait before polling an async batch result. İYS requires at least 300 s.",
                        "schema": {
                            "type": ["integer", "null"],
                            "minimum": 0,
                            "default": extra_default("batch_result_delay_seconds"),
                        },
                    },
                    "timeout": {
                        "label": "Request timeout (s)",
                        "description": "Connect and read timeout of each HTTP request.",
                        "schema": {"type": ["number", "null"], "minimum": 1, "default": extra_default("timeout")},
                    },
                    "success_ratio_floor": {
                        "label": "Success ratio floor",
                        "description": "İYS de-whitelists an IP whose success ratio (successes ÷ (successes + "
                        "client errors)) stays under 0.70. When one more failure would put the last 24 h under "
                        "this floor, calls that can fail (single status, writes) stop and the task fails.",
                        "schema": {
                            "type": ["number", "null"],
                            "exclusiveMinimum": 0,
                            "maximum": 1,
                            "default": extra_default("success_ratio_floor"),
                        },
                    },
                    "success_ratio_min_calls": {
                        "label": "Success ratio floor from (calls)",
                        "description": "The floor applies only from this many successes plus client errors in "
                        "the last 24 h, so a few 404s on a quiet day do not stop anything.",
                        "schema": {
                            "type": ["integer", "null"],
                            "minimum": 0,
                            "default": extra_default("success_ratio_min_calls"),
                        },
                    },
                    "shared_state_conn_id": {
                        "label": "Shared state Postgres connection",
                        "description": "Postgres connection holding the shared token cache and rate limiter "
                        "(schema iys). Empty means per-process state: only for single-process use.",
                        "schema": {"type": ["string", "null"], "default": extra_default("shared_state_conn_id")},
                    },
                    "verify_ssl": {
                        "label": "Verify TLS certificates",
                        "description": "Leave on. Turn off only for a local simulator on plain HTTP.",
                        "schema": {"type": ["boolean", "null"], "default": extra_default("verify_ssl")},
                    },
                    "proxies": {
                        "label": "Egress proxy",
                        "description": "İYS whitelists source IPs: send its traffic through your fixed-IP "
                        'egress proxy, e.g. {"https": "http://proxy.internal:3128"}. Takes precedence over the '
                        "workers' HTTPS_PROXY / HTTP_PROXY; empty leaves that environment (and NO_PROXY) in charge. "
                        "The Test button leaves from the API server's IP, through this proxy if set.",
                        "schema": {"type": ["object", "null"], "default": extra_default("proxies")},
                    },
                    "egress_ip": {
                        "label": "Egress IP label",
                        "description": "İYS counts the token budget, the H084 block and 10 requests per second "
                        "per client IP, across all accounts. Name the public IP this worker's İYS traffic leaves "
                        "from (e.g. 203.0.113.7 or nat-a) when workers leave through different IPs; workers "
                        "with the same label share one budget. Empty: the whole installation shares one IP. The Test "
                        "button runs in the API server: its request leaves from the API server's IP, not the "
                        "workers'; it reuses the shared token and sends nothing during an H084 block.",
                        "schema": {
                            "type": ["string", "null"],
                            # Empty allowed: a cleared field means "one IP for the installation".
                            "pattern": f"^(?:{EGRESS_LABEL_PATTERN})?$",
                            "default": extra_default("egress_ip"),
                        },
                    },
                    "push_username": {
                        "label": "Push receiver user name",
                        "description": "The HTTP Basic user name İYS sends with its pushes to your receiver "
                        "(registered with the URL). Empty: Push is not used.",
                        "schema": {"type": ["string", "null"], "default": extra_default("push_username")},
                    },
                    "push_password": {
                        "label": "Push receiver password",
                        "description": "Its password. The receiver answers 401 to any other; rotate it by "
                        "registering a second URL per channel first.",
                        "schema": {
                            "type": ["string", "null"],
                            "format": "password",
                            "default": extra_default("push_password"),
                        },
                    },
                    "push_credentials": {
                        "label": "Push credentials per channel",
                        "description": "Optional: a user name and password per channel, e.g. "
                        '{"MESAJ": {"username": "…", "password": "…"}}; a channel not named uses the two fields '
                        "above.",
                        "schema": {"type": ["object", "null"], "default": extra_default("push_credentials")},
                    },
                },
            }
        ],
    }
