"""The package's root modules by concept: a concept takes another's types from models, never its rules.

Each concept (initial sync, change feed, outbox, reconciliation, limits, people) imports the shared
modules and, where a workflow spans two concepts, a named function of another concept's store or
service (listed in :data:`CROSS_CONCEPT_CALLS`, each with its reason). Types that two concepts
share live in :mod:`iys_provider.models`; the modules that defined them still export them.
"""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

import iys_provider

PACKAGE = pathlib.Path(iys_provider.__file__).parent
CONCEPTS = {
    "initial sync": (
        "scan_ledger",
        "scan_ledger_store",
        "scan_claims",
        "scan_claims_store",
        "consent_checks",
        "recipients",
    ),
    "change feed": ("change_feed_store", "change_feed_pull", "consent_store"),
    "outbox": ("outbox", "outbox_store", "outbox_push", "outbox_approval", "outbox_settlement"),
    "reconciliation": ("reconciliation", "reconciliation_store", "reconciliation_day"),
    "run report": ("sync_runs", "sync_runs_store"),
    "limits": ("rate_control", "rate_control_store", "success_ratio", "success_ratio_store", "shared_state"),
    "people": ("user_source", "leavers", "leavers_store", "retention", "retention_store"),
    "shared": (
        "models",
        "exceptions",
        "database",
        "schema",
        "normalize",
        "business_days",
        "assets",
        "config",
        "templating",
    ),
}
CONCEPT_OF = {module: concept for concept, modules in CONCEPTS.items() for module in modules}
#: (importer, imported module, name): one workflow's step that runs another concept's SQL or service.
CROSS_CONCEPT_CALLS = {
    # A checked batch is written to the consents the change feed keeps, in one transaction.
    ("consent_checks", "consent_store", "write_checked_users"),
    # A repaired day's movements are stored the way the change feed stores them.
    ("reconciliation_store", "change_feed_store", "store_change_page"),
    # Planning a scan forgets the leavers its snapshot lacks, in the plan's transaction.
    ("scan_ledger_store", "leavers_store", "forget_leavers"),
    # The scan's snapshot is read from the brand's users.
    ("scan_ledger_store", "user_source", "UserSource"),
    # A finished initial scan covers the feed up to its start: the pull's 7-day gap guard counts from it.
    ("change_feed_pull", "scan_ledger_store", "last_finished_scan"),
    # The deployment settings are checked, and defaulted, by the rules of the concept each one shapes.
    ("config", "reconciliation", "DEFAULT_FILE_FORMAT"),
    ("config", "reconciliation", "DEFAULT_MAX_WAIT"),
    ("config", "reconciliation", "file_format"),
    ("config", "scan_ledger", "DEFAULT_PARALLEL_BATCHES"),
    ("config", "retention", "RetentionPolicy"),
}


def imports_of(module: str) -> set[tuple[str, str]]:
    """(imported root module, name) for every ``from iys_provider.<module> import name`` in ``module``."""
    tree = ast.parse((PACKAGE / f"{module.replace('.', '/')}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("iys_provider."):
            imported = node.module.removeprefix("iys_provider.")
            if "." not in imported:
                found |= {(imported, alias.name) for alias in node.names}
    return found


def test_every_root_module_of_a_concept_is_listed():
    roots = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__", "get_provider_info", "deadline_watch"}
    assert roots == set(CONCEPT_OF)


@pytest.mark.parametrize("module", sorted(CONCEPT_OF))
def test_a_concept_imports_only_shared_modules_and_named_cross_concept_calls(module):
    concept = CONCEPT_OF[module]
    crossing = {
        (module, imported, name)
        for imported, name in imports_of(module)
        if CONCEPT_OF.get(imported, "shared") not in ("shared", concept)
    }
    assert crossing <= CROSS_CONCEPT_CALLS


def test_the_iys_hook_takes_its_answer_models_from_models_not_from_a_concept():
    assert {imported for imported, _ in imports_of("hooks.iys")} <= set(CONCEPTS["shared"])


@pytest.mark.parametrize(
    ("old_module", "names"),
    [
        ("outbox", ("OutboxState",)),
        ("user_source", ("SourceUser", "second_connection")),
        ("recipients", ("PreparedUsers", "UserRow", "LinkRow", "RejectionRow")),
        ("consent_store", ("WriteOutcome",)),
        ("leavers", ("Forgotten", "DEFAULT_MAX_LEAVER_SHARE")),
        ("reconciliation", ("AgreementCaptured", "AgreementInfo", "DailyChangeSummaryResponse", "ChangeStat")),
    ],
)
def test_moved_types_are_still_importable_from_their_old_modules(old_module, names):
    old = importlib.import_module(f"iys_provider.{old_module}")
    for name in names:
        shared = "database" if name == "second_connection" else "models"
        assert getattr(old, name) is getattr(importlib.import_module(f"iys_provider.{shared}"), name)
