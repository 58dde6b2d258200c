"""OAuth 2.1 for signoff: agents' access tokens (a resource server) and the issuer discovery and JWT checks that
the web page's single sign-on shares."""

from integrations.oauth.agents import Authenticator, Caller, Refusal
from integrations.oauth.issuer import Issuer, IssuerMetadata
from integrations.oauth.metadata import build_metadata_routes
from integrations.oauth.validation import verify_jwt

__all__ = ["Authenticator", "Caller", "Issuer", "IssuerMetadata", "Refusal", "build_metadata_routes", "verify_jwt"]
