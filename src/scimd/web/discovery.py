"""Discovery documents: ServiceProviderConfig, ResourceTypes and Schemas (RFC 7644 §4)."""

from __future__ import annotations

from typing import Any

from scimd.scim import cursor
from scimd.scim import schema as S
from scimd.settings import Settings

LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"


def service_provider_config(settings: Settings, base: str) -> dict[str, Any]:
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/scimd/scimd",
        "patch": {"supported": True},
        "bulk": {
            "supported": True,
            "maxOperations": settings.max_bulk_operations,
            "maxPayloadSize": settings.max_payload,
        },
        "filter": {"supported": True, "maxResults": settings.max_results},
        "changePassword": {"supported": True},  # PUT and PATCH set it (scim/passwords.py)
        "sort": {"supported": True},
        "etag": {"supported": True},
        "pagination": {  # RFC 9865 §4
            "cursor": True,
            "index": True,
            "defaultPaginationMethod": "index",
            "defaultPageSize": settings.default_count,
            "maxPageSize": settings.max_results,
            "cursorTimeout": cursor.TIMEOUT,
        },
        "authenticationSchemes": [
            {
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": (
                    "A client secret of an OAuth 2 application with the 'USER SYNC' scope "
                    "(grant type 'Bearer token'), or an access token from /oauth2/server/token."
                ),
                "specUri": "https://www.rfc-editor.org/info/rfc6750",
                "primary": True,
            },
            {
                "type": "httpbasic",
                "name": "HTTP Basic",
                "description": (
                    "The client id and a secret of a 'Bearer token' application as user name"
                    " and password (Okta's Basic Auth option)."
                ),
                "specUri": "https://www.rfc-editor.org/info/rfc7617",
                "primary": False,
            },
        ],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": f"{base}/ServiceProviderConfig",
        },
    }


def list_response(resources: list[dict[str, Any]], start: int = 1) -> dict[str, Any]:
    return {
        "schemas": [LIST_RESPONSE],
        "totalResults": len(resources),
        "itemsPerPage": len(resources),
        "startIndex": start,
        "Resources": resources,
    }


def schemas(types: list[S.ResourceType], base: str) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for rt in types:
        for s in (s for s in rt.schemas if s.advertised):
            seen.setdefault(s.id, s.to_dict(f"{base}/Schemas/{s.id}"))
    return list(seen.values())


def resource_types(types: list[S.ResourceType], base: str) -> list[dict[str, Any]]:
    return [rt.to_dict(f"{base}/ResourceTypes/{rt.name}") for rt in types]
