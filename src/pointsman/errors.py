"""Errors that reach a client: each knows its HTTP status and its OpenAI error type and code."""

from __future__ import annotations

from typing import Any


class PointsmanError(Exception):
    """An error with an OpenAI-shaped body and an HTTP status."""

    status = 500
    type = "server_error"
    code: str | None = None
    # The request field at fault, when one is (OpenAI's `param`).
    param: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        }


class InvalidRequest(PointsmanError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationFailed(PointsmanError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(PointsmanError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class ModelNotFound(PointsmanError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class BodyTooLarge(PointsmanError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RequestIncomplete(PointsmanError):
    """The client stopped sending the request body: it went away, or its connection's
    `server.timeouts.request_body` passed."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"

    def __init__(self) -> None:
        super().__init__("the client did not send the whole request body")


class RateLimited(PointsmanError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamFailed(PointsmanError):
    """Every deployment of the plan failed; status 502, 503 or 504 says how."""

    status = 503
    type = "upstream_error"
    code = "all_deployments_failed"


class NoDeployment(PointsmanError):
    """Policies removed every candidate: nothing may answer this request."""

    status = 400
    type = "invalid_request_error"
    code = "no_eligible_deployment"


class PolicyRefused(PointsmanError):
    """Governance policies (residency, access lists, user tiers, price) leave no deployment
    this caller may use for this request."""

    status = 403
    type = "permission_error"
    code = "policy_refused"


class PIIRefused(PointsmanError):
    """The request carries personal data that a PII rule says must not be sent anywhere."""

    status = 400
    type = "invalid_request_error"
    code = "pii_refused"


class UpstreamRejected(PointsmanError):
    """A deployment rejected the request as the client's fault (an upstream 400/404/413/422):
    the client gets the upstream's status and message (after the deployment's name), and its
    error type, code and param when the upstream gave them."""

    status = 400
    type = "invalid_request_error"
    code = "upstream_rejected"

    @classmethod
    def of(cls, exc: Any, deployment: str) -> UpstreamRejected:
        """From a provider's UpstreamError (`status`, `message` and the parsed error `body`)."""
        error = cls(f"{deployment} rejected the request: {exc.message}", status=exc.status or 400)
        body = exc.body.get("error") if isinstance(exc.body, dict) else None
        if isinstance(body, dict):
            for name in ("type", "code", "param"):
                if isinstance(value := body.get(name), str) and value:
                    setattr(error, name, value)
        return error
