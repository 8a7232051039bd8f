"""Which batch of a scan asks İYS about an address: the first to claim it.

Users share addresses (a family's phone, a shared mailbox), and a scan's batches are cut by user,
so one address often turns up in several batches. Asking about it in each costs İYS calls the
data does not need: at a million demo users, 9 % of all multi-status calls. So before a batch
asks, it claims its addresses for the scan (the SQL is in :mod:`iys_provider.initial_sync.scan_claims_store`);
an address another batch claimed first is left to that batch.

====================================  ==========================================================
the batch's address is                verdict
====================================  ==========================================================
unclaimed                             **claimed** by this batch, which asks İYS and records the
                                      answer
claimed by this batch (an earlier     **asked** again: the earlier try's answer was never
try that failed)                      written
claimed by another batch of the scan  **left**: the other batch asks and records it. This batch
                                      writes only its users' links; until the other batch is
                                      done, the address has no consent row, so it is not
                                      sendable (never the wrong way round)
====================================  ==========================================================

A claim is made per (recipient type, address): a phone is asked on MESAJ and ARAMA by the same
batch. Claims live as long as their scan is open and are dropped when it is finished or
abandoned. Every claimed address is asked before its scan can finish, because the scan finishes
only once every batch has, and a batch asks all it claimed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Set

from iys_provider.models import ConsentType, RecipientType

#: The addresses of one group of users to ask about, per (recipient type, channel).
AddressesByChannel = Mapping[tuple[RecipientType, ConsentType], Set[str]]


def claimable(to_check: AddressesByChannel) -> Iterator[tuple[str, str]]:
    """Each (recipient type, address) of ``to_check`` once: what a batch claims."""
    seen: set[tuple[str, str]] = set()
    for (rtype, _), addresses in to_check.items():
        for address in addresses:
            key = (rtype.value, address)
            if key not in seen:
                seen.add(key)
                yield key


def addresses_to_ask(
    to_check: AddressesByChannel, claimed_elsewhere: Set[tuple[str, str]]
) -> dict[tuple[RecipientType, ConsentType], Set[str]]:
    """``to_check`` without the addresses another batch claimed; channels left empty are dropped."""
    if not claimed_elsewhere:
        return dict(to_check)  # the first batch of a scan, and most others: no address to leave out
    remaining: dict[tuple[RecipientType, ConsentType], Set[str]] = {}
    for (rtype, ctype), addresses in to_check.items():
        mine = {address for address in addresses if (rtype.value, address) not in claimed_elsewhere}
        if mine:
            remaining[(rtype, ctype)] = mine
    return remaining
