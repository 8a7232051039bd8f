"""IysHook reports its consent reads and writes to Airflow's hook lineage, named by API host and codes only."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlsplit

import pytest
from airflow.sdk.lineage import HookLineageCollector

from iys_provider.hooks import base as hook_base
from iys_provider.hooks.iys import IysHook
from iys_provider.models import IYS_TIMEZONE, ChangeStream, Consent, ConsentType
from tests_support import SIM_BRAND_CODE, SIM_IYS_CODE

PHONE = "+905321234567"


@pytest.fixture
def collector(monkeypatch):
    """A real collector in place of Airflow's singleton, which collects only when a lineage reader (OpenLineage)
    is registered; this test is about what the hook reports, not about OpenLineage's plugin."""
    collector = HookLineageCollector()
    monkeypatch.setattr(hook_base, "get_hook_lineage_collector", lambda: collector)
    return collector


def uris(infos) -> dict[str, int]:
    return {info.asset.uri: info.count for info in infos}


def test_reads_and_writes_of_consents_are_reported_as_the_brands_iys_asset(sim, collector):

    expected = f"iys://{urlsplit(sim.url).netloc}/{SIM_IYS_CODE}/{SIM_BRAND_CODE}"
    hook = IysHook()
    hook.get_brands()  # account metadata: no consent data, no lineage
    assert uris(collector.collected_assets.inputs) == {}

    hook.get_onay_recipients([PHONE], ConsentType.MESAJ)
    list(hook.iter_change_pages(ChangeStream.IYS))
    now = datetime.now(IYS_TIMEZONE).replace(microsecond=0)
    hook.add_consent(
        Consent(recipient=PHONE, type="MESAJ", status="ONAY", source="HS_WEB", consent_date=now - timedelta(minutes=1))
    )

    lineage = collector.collected_assets
    assert uris(lineage.inputs) == {expected: 2}  # the multi status and the change feed
    assert uris(lineage.outputs) == {expected: 1}  # the add
    assert all(info.context is hook for info in lineage.inputs + lineage.outputs)
    # The asset names the API and the brand, nothing of the recipient.
    text = repr(lineage)
    assert PHONE not in text and PHONE[3:] not in text
