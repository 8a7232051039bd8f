"""Airflow plugin "iys" (the İYS page) from the plugins folder; the logic lives in the iys_provider package.

When the installed provider registers the plugin itself (``[core] lazy_discover_providers = False``),
this file exposes nothing, so the plugin is never registered twice (see iys_provider.plugins.iys_plugin).
"""

from iys_provider.plugins.iys_plugin import plugin_for_plugins_folder

# Airflow registers every AirflowPlugin subclass among the module's globals: this one, or none.
IysDashboardPlugin = plugin_for_plugins_folder()
