"""Directory pages of the work portal (users, groups, properties, audit, connection)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from scimd.web.portal import Portal


def routes(portal: Portal) -> list[BaseRoute]:
    return []
