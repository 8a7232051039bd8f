"""The Airflow plugin "iys": the İYS page (a nav entry of the Airflow UI) and the FastAPI app behind it.

Two ways install it, and exactly one of them registers it (Airflow would otherwise log a second
registration as a plugin import error):

==============================================  =================================================
deployment                                      who registers the plugin
==============================================  =================================================
provider installed, ``[core]                    the provider (``plugins`` in its provider info):
lazy_discover_providers = False``               the plugins-folder file stays empty
provider installed, lazy discovery (the         the plugins-folder file ``plugins/iys_dashboard.py``:
default: Airflow then loads no provider's       Airflow 3.3 loads provider plugins only without
plugins)                                        lazy discovery
package only importable (no provider entry      the plugins-folder file
point)
==============================================  =================================================

:func:`plugin_for_plugins_folder` is that decision; the thin file in the project's ``plugins/``
folder exposes only what it returns.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from airflow.plugins_manager import AirflowPlugin

from iys_provider.plugins.app import create_dashboard_app

PLUGIN_NAME = "iys"
URL_PREFIX = "/iys"
PROVIDER_ENTRY_POINT_GROUP = "apache_airflow_provider"
PROVIDER_INFO_ENTRY_POINT = "iys_provider.get_provider_info:get_provider_info"


class IysPlugin(AirflowPlugin):
    name = PLUGIN_NAME
    fastapi_apps = [{"app": create_dashboard_app(), "url_prefix": URL_PREFIX, "name": "İYS"}]
    external_views = [
        {
            "name": "İYS",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "url_route": "iys",
            "icon": f"{URL_PREFIX}/static/icon.svg",
            "nav_top_level": True,  # its own entry in the side bar, not under "Plugins"
        }
    ]


def provider_registers_plugin(*, lazy_discover_providers: bool | None = None) -> bool:
    """Whether Airflow registers the plugin through the installed provider's info."""
    if lazy_discover_providers is None:
        from airflow.sdk import conf

        # The option airflow.settings.LAZY_LOAD_PROVIDERS reads, with its default.
        lazy_discover_providers = conf.getboolean("core", "lazy_discover_providers", fallback=True)
    if lazy_discover_providers:
        return False
    return any(ep.value == PROVIDER_INFO_ENTRY_POINT for ep in entry_points(group=PROVIDER_ENTRY_POINT_GROUP))


def plugin_for_plugins_folder(*, lazy_discover_providers: bool | None = None) -> type[AirflowPlugin] | None:
    """The plugin class for the plugins-folder file to expose, or ``None`` when the provider registers it."""
    return None if provider_registers_plugin(lazy_discover_providers=lazy_discover_providers) else IysPlugin
