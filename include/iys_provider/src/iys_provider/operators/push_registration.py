"""Register, list or unregister a brand's push receiver with İYS, as an Airflow task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from iys_provider.operators.base import IysBaseOperator, failing_without_retries
from iys_provider.push.registration import PushRegistration
from iys_provider.push.registration_rules import ACTIONS, CHANNELS
from iys_provider.templating import TemplatedValueError, as_optional_str

if TYPE_CHECKING:
    from airflow.sdk import Context


class IysPushRegistrationOperator(IysBaseOperator):
    """Register, list or unregister the receiver links of the brand of ``iys_conn_id`` with İYS.

    Each link is ``<receiver_base_url>/iys-push/<iys_conn_id>/<CHANNEL>`` with the channel's push
    credentials from the connection. İYS's links are listed first: a link İYS holds is not
    registered again, one it does not hold is not unregistered, and a channel's third link, an
    http URL or missing credentials fail the task before any change is sent. İYS's refusals fail
    the task with İYS's code, without retries (each would count against İYS's success ratio).

    Returns ``{"action", "iys_conn_id", "brand_code", "channels": [{"channel", "url", "outcome",
    "message"}], "links": [{"channel", "url", "status", "register_time"}]}``; no credentials.

    :param action: ``register``, ``list`` or ``unregister``. (templated)
    :param receiver_base_url: the receiver's public https base URL; required to register or
        unregister. (templated)
    :param channels: the channels to act on (``ARAMA``, ``MESAJ``, ``EPOSTA``; default all three), a
        list or comma-separated text. (templated)
    """

    template_fields: Sequence[str] = (*IysBaseOperator.template_fields, "action", "receiver_base_url", "channels")

    def __init__(
        self,
        *,
        action: str = "register",
        receiver_base_url: str | None = None,
        channels: Sequence[str] | str = CHANNELS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.action = action
        self.receiver_base_url = receiver_base_url
        self.channels = channels

    def execute(self, context: Context) -> dict[str, Any]:
        action = str(self.action).strip().lower()
        if action not in ACTIONS:
            raise TemplatedValueError(f"action must be one of {', '.join(ACTIONS)}, not {self.action!r}")
        base_url = as_optional_str(self.receiver_base_url)
        if action != "list" and base_url is None:
            raise TemplatedValueError(f"receiver_base_url is required to {action}")
        service = PushRegistration(self.iys_hook)
        try:
            with failing_without_retries():
                if action == "list":
                    result = service.list()
                elif action == "register":
                    result = service.register(base_url, _channels(self.channels))
                else:
                    result = service.unregister(base_url, _channels(self.channels))
        finally:
            self.iys_hook.close()
        for outcome in result.channels:
            self.log.info("Push %s %s: %s %s", outcome.channel, outcome.url, outcome.outcome, outcome.message)
        self.log.info("İYS lists %d push links for %s", len(result.links), result.iys_conn_id)
        return result.to_dict()


def _channels(value: Sequence[str] | str) -> list[str]:
    """A list, or text as rendered (``"ARAMA,MESAJ"``, ``"['ARAMA', 'MESAJ']"``), as channel names."""
    if isinstance(value, str):
        value = value.strip().strip("[]()").replace("'", "").replace('"', "").split(",")
    return [str(channel).strip().upper() for channel in value if str(channel).strip()]
