"""What registering, listing and unregistering a brand's push receiver with İYS may call (pure).

İYS refuses a link that is not https (H531), lacks a channel (H111, H117) or credentials (H093),
would be a channel's third (H530), or, on removal, is not one it holds (H530). Each such 422
counts against İYS's success ratio, and every one of them can be known before asking: these rules
decide, from the wanted links and İYS's listing, which calls to make and which to refuse here.

One receiver URL per brand and channel: ``<receiver_base_url>/iys-push/<iys_conn_id>/<CHANNEL>``;
a second base URL (another host or path prefix) gives a channel its second link, for rotation.

Registration, per channel:

======================================  ====================  ==========================
Situation                               Verdict               Call to İYS
======================================  ====================  ==========================
URL not https, or not a plain URL       refused               none
channel has no push credentials         refused               none
URL listed for the channel              already registered    none
URL listed, İYS's status says failed    register              registration (replaces it)
two other links listed for the channel  refused (third link)  none
otherwise                               register              registration
======================================  ====================  ==========================

Unregistration, per channel: a URL that is not https or a channel without credentials is
refused; a URL İYS does not list is already absent (no call); otherwise one unregistration call,
the one link İYS removes per call.

A refusal of any channel refuses the whole action before any registration or unregistration is
sent: nothing is half done because of a mistake that was visible beforehand.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from iys_provider.hooks.settings import PUSH_CHANNELS as CHANNELS

#: What the operator and the command do.
ACTIONS = ("register", "list", "unregister")
#: İYS keeps at most this many active links per brand and channel.
MAX_LINKS_PER_CHANNEL = 2
#: The part of İYS's status text that marks a link it could not create ("Bağlantı Oluşturulamadı").
#: İYS documents no status values; only this documented failure wording is read as "not active".
FAILED_STATUS_MARK = "oluşturulamad"


class Verdict(enum.StrEnum):
    REGISTER = "register"
    ALREADY_REGISTERED = "already_registered"
    UNREGISTER = "unregister"
    ALREADY_ABSENT = "already_absent"
    REFUSED = "refused"


@dataclass(frozen=True)
class ListedLink:
    """A link as İYS lists it: what the rules need of :class:`iys_provider.models.PushLink`."""

    url: str
    channel: str
    status: str | None = None

    @property
    def failed(self) -> bool:
        return FAILED_STATUS_MARK in (self.status or "").casefold()


@dataclass(frozen=True)
class ChannelStep:
    """The verdict for one channel: its receiver URL, what to do, and why (for a refusal, the fix)."""

    channel: str
    url: str
    verdict: Verdict
    reason: str = ""

    @property
    def calls_iys(self) -> bool:
        return self.verdict in (Verdict.REGISTER, Verdict.UNREGISTER)


def base_url_problem(receiver_base_url: str) -> str | None:
    """Why ``receiver_base_url`` cannot be a receiver's base (İYS's H531 and what it cannot route); None when fine."""
    parts = urlsplit(receiver_base_url.strip())
    if parts.scheme.lower() != "https":
        return (
            f"receiver URL {receiver_base_url!r} is not https: İYS registers only https receivers (H531). "
            "Publish the receiver behind a TLS-terminating proxy and give its https address."
        )
    if not parts.hostname:
        return f"receiver URL {receiver_base_url!r} names no host"
    if parts.query or parts.fragment:
        return f"receiver URL {receiver_base_url!r} has a query or fragment; give the base address only"
    if parts.username or parts.password:
        return (
            f"receiver URL {urlsplit(receiver_base_url).hostname!r} carries credentials in the URL; İYS sends "
            "the push credentials of the iys connection as Basic auth instead"
        )
    return None


def receiver_url(receiver_base_url: str, iys_conn_id: str, channel: str) -> str:
    """``<receiver_base_url>/iys-push/<iys_conn_id>/<CHANNEL>``, the path the receiver serves."""
    return f"{receiver_base_url.strip().rstrip('/')}/iys-push/{quote(iys_conn_id, safe='')}/{channel}"


def same_url(a: str, b: str) -> bool:
    """Whether two receiver URLs are one link: scheme and host compared without case, a final ``/`` ignored."""
    return _url_key(a) == _url_key(b)


def _url_key(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url.strip())
    return parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/")


def channels_problem(channels: Iterable[str]) -> str | None:
    """Why ``channels`` is not a list of İYS's channels (H117 avoided); None when fine."""
    channels = list(channels)
    if not channels:
        return f"no channel given; choose among {', '.join(CHANNELS)}"
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        return f"unknown channel(s) {', '.join(map(repr, unknown))}: İYS's channels are {', '.join(CHANNELS)} (H117)"
    return None


def plan_registration(
    channels: Sequence[str],
    urls: dict[str, str],
    with_credentials: set[str],
    listed: Sequence[ListedLink],
) -> list[ChannelStep]:
    """One step per channel for registering ``urls`` (channel → receiver URL); see the table above."""
    steps = []
    for channel in channels:
        url = urls[channel]
        mine = [link for link in listed if link.channel == channel and same_url(link.url, url)]
        others = [link for link in listed if link.channel == channel and not same_url(link.url, url)]
        if (problem := base_url_problem(url)) is not None:
            steps.append(ChannelStep(channel, url, Verdict.REFUSED, problem))
        elif channel not in with_credentials:
            steps.append(ChannelStep(channel, url, Verdict.REFUSED, _no_credentials(channel)))
        elif mine and not any(link.failed for link in mine):
            steps.append(ChannelStep(channel, url, Verdict.ALREADY_REGISTERED, "İYS lists this link already"))
        elif len(others) >= MAX_LINKS_PER_CHANNEL:
            held = ", ".join(link.url for link in others)
            steps.append(
                ChannelStep(
                    channel,
                    url,
                    Verdict.REFUSED,
                    f"{channel} has {len(others)} links already ({held}); İYS keeps at most "
                    f"{MAX_LINKS_PER_CHANNEL} per channel. Unregister one of them first.",
                )
            )
        else:
            steps.append(ChannelStep(channel, url, Verdict.REGISTER))
    return steps


def plan_unregistration(
    channels: Sequence[str],
    urls: dict[str, str],
    with_credentials: set[str],
    listed: Sequence[ListedLink],
) -> list[ChannelStep]:
    """One step per channel for removing ``urls`` (channel → receiver URL): one İYS call per link."""
    steps = []
    for channel in channels:
        url = urls[channel]
        if (problem := base_url_problem(url)) is not None:
            steps.append(ChannelStep(channel, url, Verdict.REFUSED, problem))
        elif not any(link.channel == channel and same_url(link.url, url) for link in listed):
            steps.append(ChannelStep(channel, url, Verdict.ALREADY_ABSENT, "İYS does not list this link"))
        elif channel not in with_credentials:
            steps.append(ChannelStep(channel, url, Verdict.REFUSED, _no_credentials(channel)))
        else:
            steps.append(ChannelStep(channel, url, Verdict.UNREGISTER))
    return steps


def refusals(steps: Iterable[ChannelStep]) -> list[ChannelStep]:
    return [step for step in steps if step.verdict is Verdict.REFUSED]


def _no_credentials(channel: str) -> str:
    return (
        f"no push credentials for {channel}: set push_username and push_password (or push_credentials for "
        f"{channel}) in the iys connection's extra; İYS requires them (H093)"
    )


#: What İYS's 422 codes mean on the push registration endpoints (§7 of its documentation), and the fix.
IYS_CODE_HINTS = {
    "H191": "the receiver did not answer within İYS's 5 s",
    "H530": (
        "İYS could not create (or remove) the link: the receiver is unreachable, its certificate is not "
        "trusted, it does not answer 401 to a POST without credentials (Basic auth not enforced), it did not "
        "answer İYS's test record with 2xx, the channel has two links already, or (unregistering) the link "
        "or its credentials are not the ones İYS holds"
    ),
    "H531": "the URL must start with https",
    "H111": "the channel (type) is missing",
    "H117": "the channel must be ARAMA, MESAJ or EPOSTA",
    "H093": "the user name or password is missing",
}
