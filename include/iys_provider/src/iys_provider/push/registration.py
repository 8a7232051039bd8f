"""Registering a brand's push receiver with İYS, as a service: list, then register or unregister.

The decisions are :mod:`iys_provider.push.registration_rules`; this module makes the calls. Every
action lists İYS's links first (a read, never refused for a sound request), so a link İYS holds is
not registered again, a channel's third link and a link İYS does not hold are never sent, and a
mistake visible beforehand (http, no credentials, an unknown channel) is refused before any call.
İYS's refusals (422 with an H-code) stop the action at that channel: the receiver is the same for
every channel, so the next calls would most likely be refused too, and each refusal counts
against İYS's success ratio. Running the action again continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from iys_provider.exceptions import IysApiError, IysStepFailure
from iys_provider.hooks.iys import IysHook
from iys_provider.models import PushLink, PushLinkRequest
from iys_provider.push.registration_rules import (
    CHANNELS,
    IYS_CODE_HINTS,
    ChannelStep,
    ListedLink,
    Verdict,
    base_url_problem,
    channels_problem,
    plan_registration,
    plan_unregistration,
    receiver_url,
    refusals,
)


class PushRegistrationRefused(IysStepFailure):
    """The action was refused here, before any registration or unregistration call: the reasons say the fix."""

    def __init__(self, reasons: Sequence[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("Push registration refused, nothing sent to İYS: " + "; ".join(self.reasons))


class PushRegistrationFailed(IysStepFailure):
    """İYS refused one channel's call (a 422 and its H-code); the channels before it are done."""

    def __init__(self, *, action: str, step: ChannelStep, error: IysApiError, done: Sequence[ChannelOutcome]) -> None:
        self.channel = step.channel
        self.url = step.url
        self.code = error.code
        self.status_code = error.status_code
        self.iys_message = error.iys_message
        self.done = list(done)
        hint = IYS_CODE_HINTS.get(error.code or "")
        text = (
            f"İYS refused to {action} {step.channel} ({step.url}): {error.code or '-'} (HTTP {error.status_code}) "
            f"{error.iys_message}"
        )
        if hint:
            text += f" ({error.code}: {hint})"
        if done:
            text += ". Done before: " + ", ".join(f"{o.channel} {o.outcome}" for o in done)
        super().__init__(text)


@dataclass(frozen=True)
class ChannelOutcome:
    """What happened to one channel: ``registered``, ``already_registered``, ``unregistered``, ``already_absent``."""

    channel: str
    url: str
    outcome: str
    message: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"channel": self.channel, "url": self.url, "outcome": self.outcome, "message": self.message}


@dataclass(frozen=True)
class RegistrationResult:
    """An action's outcome: per channel for register/unregister, İYS's links for every action."""

    action: str
    iys_conn_id: str
    brand_code: int
    channels: list[ChannelOutcome] = field(default_factory=list)
    links: list[PushLink] = field(default_factory=list)

    @property
    def iys_calls(self) -> int:
        """Registration and unregistration calls made (the listing not counted)."""
        return sum(o.outcome in ("registered", "unregistered") for o in self.channels)

    def to_dict(self) -> dict[str, Any]:
        """A small JSON-able summary (an XCom, the CLI's ``--json``): URLs and İYS's texts, never credentials."""
        return {
            "action": self.action,
            "iys_conn_id": self.iys_conn_id,
            "brand_code": self.brand_code,
            "channels": [o.to_dict() for o in self.channels],
            "links": [
                {"channel": str(link.type), "url": link.url, "status": link.status, "register_time": link.register_time}
                for link in self.links
            ],
        }


class PushRegistration:
    """Register, list and unregister one brand's receiver links (the brand of ``hook``'s connection).

    :param hook: the İYS hook of the brand's ``iys`` connection; its connection holds the push
        credentials (:meth:`~iys_provider.hooks.settings.IysConnectionSettings.push_credentials_for`).
    """

    def __init__(self, hook: IysHook) -> None:
        self.hook = hook

    @property
    def iys_conn_id(self) -> str:
        return self.hook.iys_conn_id

    def receiver_urls(self, receiver_base_url: str, channels: Sequence[str] = CHANNELS) -> dict[str, str]:
        return {channel: receiver_url(receiver_base_url, self.iys_conn_id, channel) for channel in channels}

    def list(self) -> RegistrationResult:
        return self._result("list", [], self.hook.get_push_links())

    def register(self, receiver_base_url: str, channels: Sequence[str] = CHANNELS) -> RegistrationResult:
        """Register the receiver for ``channels``; links İYS lists already are left alone."""
        return self._apply("register", receiver_base_url, channels)

    def unregister(self, receiver_base_url: str, channels: Sequence[str] = CHANNELS) -> RegistrationResult:
        """Remove the receiver's link of each of ``channels``, one İYS call per link; absent ones are left alone."""
        return self._apply("unregister", receiver_base_url, channels)

    def _apply(self, action: str, receiver_base_url: str, channels: Sequence[str]) -> RegistrationResult:
        channels = list(dict.fromkeys(channels))
        problem = channels_problem(channels) or base_url_problem(receiver_base_url)
        if problem:
            raise PushRegistrationRefused([problem])
        plan = plan_registration if action == "register" else plan_unregistration
        urls = self.receiver_urls(receiver_base_url, channels)
        credentials = {c: pair for c in channels if (pair := self.hook.settings.push_credentials_for(c)) is not None}
        # A registration's refusals that need no listing come before even that call.
        if action == "register":
            self._refuse(plan(channels, urls, set(credentials), []))
        listed = self.hook.get_push_links()
        steps = plan(
            channels, urls, set(credentials), [ListedLink(link.url, str(link.type), link.status) for link in listed]
        )
        self._refuse(steps)
        outcomes: list[ChannelOutcome] = []
        for step in steps:
            if not step.calls_iys:
                outcomes.append(ChannelOutcome(step.channel, step.url, step.verdict.value, step.reason))
                continue
            pair = credentials[step.channel]
            link = PushLinkRequest(url=step.url, type=step.channel, username=pair.username, password=pair.password)
            try:
                if step.verdict is Verdict.REGISTER:
                    message = self.hook.register_push_links([link])
                else:
                    message = self.hook.unregister_push_link(link)
            except IysApiError as exc:
                if exc.status_code != 422:
                    raise
                raise PushRegistrationFailed(action=action, step=step, error=exc, done=outcomes) from None
            done = "registered" if step.verdict is Verdict.REGISTER else "unregistered"
            outcomes.append(ChannelOutcome(step.channel, step.url, done, message))
        changed = any(o.outcome in ("registered", "unregistered") for o in outcomes)
        return self._result(action, outcomes, self.hook.get_push_links() if changed else listed)

    @staticmethod
    def _refuse(steps: Sequence[ChannelStep]) -> None:
        refused = refusals(steps)
        if refused:
            raise PushRegistrationRefused([f"{step.channel}: {step.reason}" for step in refused])

    def _result(self, action: str, outcomes: list[ChannelOutcome], links: list[PushLink]) -> RegistrationResult:
        return RegistrationResult(action, self.iys_conn_id, self.hook.brand_code, outcomes, links)
