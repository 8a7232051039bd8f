"""Hook for the İYS (İleti Yönetim Sistemi) REST API.

:class:`IysHook` holds the İYS endpoints; how it talks to İYS (settings, transport, retries,
tokens) is :class:`~iys_provider.hooks.base.IysBaseHook`, and the connection's fields and
defaults are :class:`~iys_provider.hooks.settings.IysConnectionSettings`.

.. seealso:: The connection reference in the project's docs/configuration.md ("The ``iys`` connection"), and
   İYS's API documentation at https://apidocs.iys.org.tr/.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import date
from typing import Any, BinaryIO

from iys_provider.exceptions import IysMalformedResponseError, IysTokenBlockedError
from iys_provider.hooks.base import IysBaseHook
from iys_provider.hooks.responses import api_error, parse_body
from iys_provider.models import (
    AddConsentResult,
    AgreementCaptured,
    AgreementInfo,
    BatchResultItem,
    BatchSubmission,
    Brand,
    ChangePage,
    ChangeStream,
    Consent,
    ConsentRecord,
    ConsentType,
    DailyChangeSummaryResponse,
    MultiStatusResult,
    PushLink,
    PushLinkAnswer,
    PushLinkRequest,
    RecipientType,
)

MAX_RECIPIENTS_PER_STATUS_CALL = 1000
MAX_CONSENTS_PER_BATCH = 1000
MAX_CHANGES_PER_PAGE = 1000
#: Blocks of a streamed download (the daily file is up to ~200 MB and never held whole).
DOWNLOAD_CHUNK_BYTES = 1 << 20


class IysHook(IysBaseHook):
    """
    Talk to the İYS API: tokens, consents, status queries and the change feed.

    Each method is one İYS endpoint. Tokens, the shared rate limit and the retries are
    handled underneath, by :class:`~iys_provider.hooks.base.IysBaseHook`; an error İYS
    answers with is raised as :class:`~iys_provider.exceptions.IysApiError`.

    .. code-block:: python

        hook = IysHook()  # connection "iys_default"
        onay = hook.get_onay_recipients(["+905321234567"], ConsentType.MESAJ)

    :param iys_conn_id: the ``iys`` connection.
    :param brand_code: overrides the connection's brand code (accounts with several brands).
    :param max_attempts: attempts per request, including the first.
    :param max_retry_seconds: give up retrying after this long.
    """

    hook_name = "İYS"

    @property
    def _brand_path(self) -> str:
        return f"/sps/{self.iys_code}/brands/{self.brand_code}"

    def get_brands(self) -> list[Brand]:
        """Brands of the İYS account (``GET /sps/{iysCode}/brands``)."""
        body = self._call("GET", f"/sps/{self.iys_code}/brands", endpoint="brands")
        return parse_body(list[Brand], body, "brands")

    def add_consent(self, consent: Consent) -> AddConsentResult:
        """Add or update one consent through the idempotent ``/v2`` endpoint.

        Re-sending a byte-identical body returns the original transaction id, so a retry after a
        lost response cannot double-apply the movement or end in H174.
        """
        body = self._call("POST", f"/v2{self._brand_path}/consents", json_body=consent.to_api(), endpoint="add_consent")
        return parse_body(AddConsentResult, body, "add_consent")

    def submit_consent_batch(self, consents: Sequence[Consent]) -> BatchSubmission:
        """Submit up to 1000 consents for asynchronous processing (202 + requestId), through ``/v2``.

        With ``/v2`` a resubmitted movement İYS already stored is answered with its original
        transaction id instead of H174, so a retry after a lost answer settles as sent.

        İYS accepts one movement per recipient and channel per batch (H194); several movements
        for one address must go through :meth:`add_consent` one after another.
        """
        if not consents:
            raise ValueError("an İYS batch needs at least one consent")
        if len(consents) > MAX_CONSENTS_PER_BATCH:
            raise ValueError(f"an İYS batch holds at most {MAX_CONSENTS_PER_BATCH} consents, got {len(consents)}")
        keys = {(c.recipient, c.recipient_type, c.type) for c in consents}
        if len(keys) != len(consents):
            raise ValueError("an İYS batch may hold each recipient, recipient type and type only once (H194)")
        body = self._call(
            "POST",
            f"/v2{self._brand_path}/consents/request",
            json_body=[c.to_api() for c in consents],
            endpoint="submit_batch",
            expected=(200, 202),
        )
        return parse_body(BatchSubmission, body, "submit_batch")

    def get_batch_result(self, request_id: str) -> list[BatchResultItem] | None:
        """Result of an async batch, or ``None`` while İYS has not produced it yet.

        İYS answers with an empty body until processing is done (at least 300 s after submission).
        """
        body = self._call(
            "GET", f"/v2{self._brand_path}/consents/request/{request_id}", endpoint="batch_result", allow_empty=True
        )
        if not body:
            return None
        return parse_body(list[BatchResultItem], body, "batch_result")

    def get_consent_status(
        self,
        recipient: str,
        consent_type: ConsentType,
        recipient_type: RecipientType = RecipientType.BIREYSEL,
    ) -> ConsentRecord | None:
        """Full consent record of one recipient, or ``None`` when İYS holds none.

        İYS does not document its answer for an address it does not hold; both an empty 200 and
        a 404 mean "not in İYS". This call has an hourly quota of 1000 per IP (H086).
        """
        body = self._call(
            "POST",
            f"{self._brand_path}/consents/status",
            json_body={"recipient": recipient, "recipientType": recipient_type.value, "type": consent_type.value},
            endpoint="consent_status",
            allow_empty=True,
            not_found_is_empty=True,
        )
        if not body:
            return None
        return parse_body(ConsentRecord, body, "consent_status")

    def get_onay_recipients(
        self,
        recipients: Iterable[str],
        consent_type: ConsentType,
        recipient_type: RecipientType = RecipientType.BIREYSEL,
    ) -> set[str]:
        """The subset of ``recipients`` whose consent for ``consent_type`` is ONAY in İYS.

        Multi status lists only ONAY recipients: absent means RET *or* unknown to İYS. Duplicates
        are removed and the list is sent in calls of at most 1000 recipients.
        """
        return self.get_onay_recipients_by_channel({(recipient_type, consent_type): recipients})[
            (recipient_type, consent_type)
        ]

    def get_onay_recipients_by_channel(
        self,
        recipients: Mapping[tuple[RecipientType, ConsentType], Iterable[str]],
        *,
        concurrency: int = 1,
    ) -> dict[tuple[RecipientType, ConsentType], set[str]]:
        """:meth:`get_onay_recipients` for several (recipient type, channel) groups at once.

        With ``concurrency`` > 1 the ≤1000-recipient calls run in parallel threads, so network
        latency does not cap a task's request rate; the shared rate limiter still bounds the
        aggregate rate of every task.
        """
        jobs = []
        for (recipient_type, consent_type), group in recipients.items():
            unique = list(dict.fromkeys(group))
            for start in range(0, len(unique), MAX_RECIPIENTS_PER_STATUS_CALL):
                jobs.append((recipient_type, consent_type, unique[start : start + MAX_RECIPIENTS_PER_STATUS_CALL]))
        onay: dict[tuple[RecipientType, ConsentType], set[str]] = {key: set() for key in recipients}
        if concurrency > 1 and len(jobs) > 1:
            self._access_token()  # resolve connection, session, shared state and token before threading
            with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="iys-status") as pool:
                answers = list(pool.map(lambda job: self._onay_chunk(*job), jobs))
        else:
            answers = [self._onay_chunk(*job) for job in jobs]
        for (recipient_type, consent_type, _), answer in zip(jobs, answers, strict=True):
            onay[(recipient_type, consent_type)].update(answer)
        return onay

    def _onay_chunk(self, recipient_type: RecipientType, consent_type: ConsentType, chunk: list[str]) -> set[str]:
        path = f"{self._brand_path}/consents/{recipient_type.value}/status/{consent_type.value}"
        body = self._call("POST", path, json_body={"recipients": chunk}, endpoint="multi_status")
        result = parse_body(MultiStatusResult, body, "multi_status")
        return set(result.onay).intersection(chunk)

    def iter_change_pages(
        self, source: ChangeStream, *, after: str | None = None, limit: int = MAX_CHANGES_PER_PAGE
    ) -> Iterator[ChangePage]:
        """Pages of the change feed of one stream, oldest first, until İYS answers 204.

        Store each page's ``after`` together with the page's changes (same transaction); passing
        it back resumes exactly after that page. İYS serves only the last 7 days minus one hour.
        """
        if not 1 <= limit <= MAX_CHANGES_PER_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_CHANGES_PER_PAGE}")
        cursor = after
        while True:
            params: dict[str, Any] = {"source": ChangeStream(source).value, "limit": limit}
            if cursor:
                params["after"] = cursor
            body = self._call(
                "GET", f"{self._brand_path}/consents/changes", params=params, endpoint="changes", allow_empty=True
            )
            if not body:
                return
            page = parse_body(ChangePage, body, "changes")
            if not page.changes:
                return
            if not page.after or page.after == cursor:
                raise IysMalformedResponseError(
                    "change feed returned movements without advancing the cursor", endpoint="changes"
                )
            yield page
            cursor = page.after

    def test_connection(self) -> tuple[bool, str]:
        """The connection form's Test button: list the brands with the shared token, unless İYS blocks us.

        Airflow runs this inside the API server, so the request leaves from the API server's IP, not
        the workers'. A click must not cost what tasks need: the shared token is reused (a token
        call only when none valid is cached), and during a recorded H084 block nothing is sent at
        all, because a token call then would restart İYS's hour for every account on the IP.
        """
        try:
            return self._test_connection()
        except Exception as exc:  # the form shows the message; a traceback would only hide it
            return False, str(exc)
        finally:
            self.close()  # the API server keeps running: release the session and the Postgres connection

    def _test_connection(self) -> tuple[bool, str]:
        settings = self.settings
        try:
            self._raise_if_blocked(self.shared_state.peek_token(settings.account_key).blocked_until)
        except IysTokenBlockedError as blocked:
            return False, f"Not tested, İYS was not called: {blocked}"
        token_requests_before = self.stats.token_requests
        brands = self.get_brands()
        token = (
            "reused the shared token"
            if self.stats.token_requests == token_requests_before
            else f"requested {self.stats.token_requests - token_requests_before} new token(s), now shared"
        )
        codes = sorted(b.brand_code for b in brands)
        readable = ", ".join(_describe_brand(b) for b in sorted(brands, key=lambda b: b.brand_code)) or "none"
        where = f"from this API server's IP (budget {settings.ip_budget_key}); {token}"
        if self.brand_code not in codes:
            return False, (
                f"Authenticated to İYS as İYS code {self.iys_code} {where}, but brand code {self.brand_code} "
                f"is not among the brands this account may read: {readable}. Check the brand code, and the "
                "partnership permissions in the İYS panel."
            )
        return True, (
            f"Connected to İYS {where}. İYS code {self.iys_code}, brand {self.brand_code}. The account may read "
            f"the brand list of İYS code {self.iys_code}, {len(codes)} brand(s): {readable}; this connection acts "
            f"for brand {self.brand_code}."
        )

    # ------------------------------------------------------------------ Push (İzin Hareketi İletimi) links
    # Callers check the links first (iys_provider.push.registration_rules): https, credentials, at most
    # two per channel. İYS answers anything else with a 422, which counts against the success ratio.

    def register_push_links(self, links: Sequence[PushLinkRequest]) -> str:
        """Register receiver links (``POST …/push/registration``); İYS's message.

        Before answering, İYS checks each receiver: a POST without credentials must get 401, and its
        test record with them a 2xx within 5 s (else 422 H530, or H191 on a timeout). Registering a
        link İYS holds already replaces its credentials.
        """
        if not links:
            raise ValueError("a push registration needs at least one link")
        body = self._call(
            "POST",
            f"{self._brand_path}/push/registration",
            json_body={"connection": [link.to_api() for link in links]},
            endpoint="push_registration",
            allow_empty=True,
        )
        return parse_body(PushLinkAnswer, body or {}, "push_registration").message or ""

    def get_push_links(self) -> list[PushLink]:
        """The brand's push links with İYS's status text (``GET …/push/registration``)."""
        body = self._call("GET", f"{self._brand_path}/push/registration", endpoint="push_links", allow_empty=True)
        return parse_body(list[PushLink], body or [], "push_links")

    def unregister_push_link(self, link: PushLinkRequest) -> str:
        """Remove one link (``POST …/push/unregistration``, flat body); İYS's message.

        İYS wants the credentials the link was registered with: another pair, or a link it does not
        hold, is a 422 H530.
        """
        body = self._call(
            "POST",
            f"{self._brand_path}/push/unregistration",
            json_body=link.to_api(),
            endpoint="push_unregistration",
            allow_empty=True,
        )
        return parse_body(PushLinkAnswer, body or {}, "push_unregistration").message or ""

    # ------------------------------------------------------------------ daily reconciliation (mutabakat)
    # The day is always a completed day inside İYS's 7-day window: callers check it first
    # (iys_provider.reconciliation.rules.outside_window_reason); İYS answers any other with a 422.

    def get_daily_change_summary(
        self, report_date: date, recipient_type: RecipientType = RecipientType.BIREYSEL
    ) -> DailyChangeSummaryResponse:
        """İYS's counts of the day's movements per channel and source, for one recipient type."""
        path = f"{self._brand_path}/changes/{report_date.isoformat()}/recipients/{RecipientType(recipient_type).value}"
        body = self._call("GET", path, endpoint="reconciliation_summary", allow_empty=True)
        return parse_body(DailyChangeSummaryResponse, body or {}, "reconciliation_summary")

    def get_agreement(self, report_date: date) -> AgreementInfo | None:
        """The day's hash job and agreement (``processStatus``, ``hashValue``, ``hashMethod``,
        ``agreementStatus``); ``None`` for İYS's 204 ("no value found")."""
        body = self._call(
            "GET", f"{self._brand_path}/agreements/{report_date.isoformat()}", endpoint="agreement", allow_empty=True
        )
        return None if body is None else parse_body(AgreementInfo, body, "agreement")

    def put_agreement(self, report_date: date) -> bool | None:
        """Agree with İYS on the day (``{"agreementStatus": true}``); whether İYS captured it.

        ``None`` for İYS's 204: no consent movements that day to reconcile.
        """
        body = self._call(
            "PUT",
            f"{self._brand_path}/agreements/{report_date.isoformat()}",
            json_body={"agreementStatus": True},
            endpoint="agreement_put",
            allow_empty=True,
        )
        return None if body is None else parse_body(AgreementCaptured, body, "agreement_put").captured

    def download_daily_file(self, report_date: date, destination: BinaryIO) -> int | None:
        """Stream the day's movement file (``text/csv``, up to ~200 MB) into ``destination``; its size.

        ``None`` for İYS's 204 (file not found). Never held in memory; a retried download starts
        the destination over.
        """
        return self._download(
            f"{self._brand_path}/changes/{report_date.isoformat()}/file", destination, endpoint="reconciliation_file"
        )

    def download_timestamp(self, report_date: date, destination: BinaryIO) -> int | None:
        """Stream the day's timestamp file (``.tsr``; İYS says ``text/plain``, the bytes are binary)."""
        return self._download(
            f"{self._brand_path}/agreements/{report_date.isoformat()}/timestamp",
            destination,
            endpoint="reconciliation_timestamp",
        )

    def _download(self, path: str, destination: BinaryIO, *, endpoint: str) -> int | None:
        """One GET streamed to ``destination``, with the retries, token, rate slot and ledger of ``_call``."""

        def attempt() -> int | None:
            destination.seek(0)  # a retried download starts the destination over
            destination.truncate()
            with closing(self._send_authorised("GET", path, stream=True)) as response:
                if response.status_code == 204:
                    return None
                if response.status_code != 200:
                    raise api_error(response, endpoint)
                size = 0
                for block in response.iter_content(chunk_size=DOWNLOAD_CHUNK_BYTES):
                    destination.write(block)
                    size += len(block)
                destination.flush()
                return size

        size = self._with_retries(endpoint, attempt)
        self._report_lineage(endpoint)
        return size


def _describe_brand(brand: Brand) -> str:
    """``700001 (Acme, master)``: the code İYS knows the brand by, with its name when İYS gives one."""
    details = [d for d in (brand.name, "master" if brand.master else None) if d]
    return f"{brand.brand_code} ({', '.join(details)})" if details else str(brand.brand_code)
