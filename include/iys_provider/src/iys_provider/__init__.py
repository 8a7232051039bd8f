"""Apache Airflow provider for İYS (İleti Yönetim Sistemi), Turkey's consent registry."""

__version__ = "0.1.0"
