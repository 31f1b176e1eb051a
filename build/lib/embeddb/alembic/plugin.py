"""The module Alembic loads through the ``alembic.plugins`` entry point.

Alembic loads its plugins while it is still importing itself (its ``autogenerate`` package is
half done), so this module imports nothing of Alembic's at the top: the comparator, which needs
``alembic.autogenerate``, is imported on its first call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.autogenerate.api import AutogenContext
    from alembic.operations.ops import UpgradeOps
    from alembic.runtime.plugins import Plugin
    from alembic.util import PriorityDispatchResult

NAME = "embeddb"


def setup(plugin: Plugin) -> None:
    """Alembic's plugin hook: compare embeddings after Alembic's own comparison has run."""
    from alembic.util import DispatchPriority

    plugin.add_autogenerate_comparator(
        compare_embeddings, "autogenerate", priority=DispatchPriority.LAST
    )


def compare_embeddings(
    autogen_context: AutogenContext, upgrade_ops: UpgradeOps
) -> PriorityDispatchResult:
    """The autogenerate comparator: :func:`embeddb.alembic.compare.compare_embeddings`."""
    from .compare import compare_embeddings as compare

    return compare(autogen_context, upgrade_ops)
