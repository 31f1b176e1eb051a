from ..integration.conftest import db, module_url  # noqa: F401  (the per-module database)
