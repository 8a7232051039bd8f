"""The package's rooms: a folder per concept, the shared modules at the root, the Airflow faces apart.

Each concept folder (initial sync, change feed, outbox, reconciliation, limits, people, run report,
push)
holds its rules, its store and its service. It imports the shared root modules and, where a workflow
spans two concepts, a named function of another concept's store or service (listed in
:data:`CROSS_CONCEPT_CALLS`, each with its reason). Types that two concepts share live in
:mod:`iys_provider.models`; the modules that defined them still export them. Operators and sensors
keep parameters, templating and context: no operator imports another operator or a sensor.
"""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

import iys_provider

PACKAGE = pathlib.Path(iys_provider.__file__).parent
CONCEPTS = ("initial_sync", "change_feed", "outbox", "reconciliation", "limits", "people", "run_report", "push")
AIRFLOW_FACES = ("hooks", "operators", "sensors", "triggers", "plugins", "dags")
SHARED = (
    "models",
    "exceptions",
    "database",
    "schema",
    "normalize",
    "business_days",
    "assets",
    "config",
    "templating",
    "consent_store",
    "get_provider_info",
    "lineage",
)
#: (importer, imported module, name), modules relative to the package: one workflow's step that runs
#: another concept's SQL or service, or a setting checked by the rules of the concept it shapes.
CROSS_CONCEPT_CALLS = {
    # A repaired day's movements are stored the way the change feed stores them.
    ("reconciliation.store", "change_feed.store", "store_change_page"),
    # A pushed movement is stored and applied by the change feed's own rules, so it is applied once.
    ("push.store", "change_feed.store", "store_change_page"),
    # Planning a scan forgets the leavers its snapshot lacks, in the plan's transaction.
    ("initial_sync.scan_ledger_store", "people.leavers_store", "forget_leavers"),
    # The scan's snapshot is read from the brand's users.
    ("initial_sync.scan_ledger_store", "people.user_source", "UserSource"),
    # A finished initial scan covers the feed up to its start: the pull's 7-day gap guard counts from it.
    ("change_feed.pull", "initial_sync.scan_ledger_store", "last_finished_scan"),
    # The deployment settings are checked, and defaulted, by the rules of the concept each one shapes.
    ("config", "reconciliation.rules", "DEFAULT_FILE_FORMAT"),
    ("config", "reconciliation.rules", "DEFAULT_MAX_WAIT"),
    ("config", "reconciliation.rules", "file_format"),
    ("config", "initial_sync.scan_ledger", "DEFAULT_PARALLEL_BATCHES"),
    ("config", "people.retention", "RetentionPolicy"),
}


def modules_under(folder: str) -> list[str]:
    return sorted(f"{folder}.{path.stem}" for path in (PACKAGE / folder).glob("*.py") if path.stem != "__init__")


def imports_of(module: str) -> set[tuple[str, str]]:
    """(imported module, name) for every ``from iys_provider.<module> import name`` in ``module``."""
    tree = ast.parse((PACKAGE / f"{module.replace('.', '/')}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("iys_provider."):
            found |= {(node.module.removeprefix("iys_provider."), alias.name) for alias in node.names}
    return found


def room_of(module: str) -> str:
    """The concept folder or Airflow face a module lives in, or ``shared`` for the package root."""
    return module.split(".", 1)[0] if "." in module else "shared"


def test_the_root_keeps_only_what_every_concept_shares():
    roots = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    assert roots == set(SHARED)
    folders = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()}
    assert folders == set(CONCEPTS) | set(AIRFLOW_FACES)


@pytest.mark.parametrize("module", [m for folder in CONCEPTS for m in modules_under(folder)] + list(SHARED))
def test_a_concept_imports_only_shared_modules_and_named_cross_concept_calls(module):
    crossing = {
        (module, imported, name)
        for imported, name in imports_of(module)
        if room_of(imported) not in ("shared", room_of(module)) and room_of(imported) not in AIRFLOW_FACES
    }
    assert crossing <= CROSS_CONCEPT_CALLS


@pytest.mark.parametrize("module", [m for folder in CONCEPTS for m in modules_under(folder)] + list(SHARED))
def test_no_rule_store_or_service_imports_an_operator_or_a_sensor(module):
    assert not {imported for imported, _ in imports_of(module) if room_of(imported) in ("operators", "sensors")}


@pytest.mark.parametrize("module", modules_under("operators") + modules_under("sensors"))
def test_no_operator_imports_another_operator_or_a_sensor(module):
    own = module if module.startswith("operators.") else None
    faces = {imported for imported, _ in imports_of(module) if room_of(imported) in ("operators", "sensors")}
    assert faces - {own, "operators.base"} == set()


def test_the_iys_hook_takes_its_answer_models_from_models_not_from_a_concept():
    assert {room_of(imported) for imported, _ in imports_of("hooks.iys")} <= {"shared", "hooks"}


@pytest.mark.parametrize(
    ("old_module", "names"),
    [
        ("outbox.rules", ("OutboxState",)),
        ("people.user_source", ("SourceUser", "second_connection")),
        ("initial_sync.recipients", ("PreparedUsers", "UserRow", "LinkRow", "RejectionRow")),
        ("consent_store", ("WriteOutcome",)),
        ("people.leavers", ("Forgotten", "DEFAULT_MAX_LEAVER_SHARE")),
        ("reconciliation.rules", ("AgreementCaptured", "AgreementInfo", "DailyChangeSummaryResponse", "ChangeStat")),
    ],
)
def test_moved_types_are_still_importable_from_their_old_modules(old_module, names):
    old = importlib.import_module(f"iys_provider.{old_module}")
    for name in names:
        shared = "database" if name == "second_connection" else "models"
        assert getattr(old, name) is getattr(importlib.import_module(f"iys_provider.{shared}"), name)
