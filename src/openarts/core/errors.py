"""The domain exception tree. The API layer translates these (api/errors.py); nothing else does.

    OpenartsError
    ├── InvalidRequest          bad input: a field, a type, a limit          (400 ModelArts.2788 / others)
    │   ├── InvalidJsonBody     the body is not JSON / not an object         (400 ModelArts.2787)
    │   ├── InvalidObsPath      an obs:// path that cannot be resolved       (400 ModelArts.2791)
    │   ├── FlavorNotFound      unknown flavor_id                            (400 ModelArts.2781)
    │   ├── FlavorOutOfRange    node_count beyond the flavor's max_num       (400 ModelArts.2793)
    │   ├── EngineNotFound      unknown engine                               (400 ModelArts.2780)
    │   ├── UnsupportedFilter   a search filter key/operator we do not know  (400 ModelArts.2789)
    │   ├── UnsupportedSort     a search sort_by we do not know              (400 ModelArts.2790)
    │   └── QueryParamsError    a bad query parameter                        (400 ModelArts.2764)
    ├── DuplicateJobName        the name is taken in this project            (400 ModelArts.2751)
    ├── JobNotFound             no such job in this project                  (400 ModelArts.2775)
    ├── TaskNotFound            no such task in this job                     (400 ModelArts.2775)
    ├── NotAllowedToTerminate   the job is already final                     (409 ModelArts.2796)
    ├── JobStatusChanged        the change needs another phase               (409 ModelArts.2878)
    ├── LogNotReady             a task has no log yet                        (204-ish, ModelArts.2776)
    └── PreparationError        a job cannot be prepared to run (not an API error: ends Abnormal)
"""

from __future__ import annotations


class OpenartsError(Exception):
    """Base of every error the domain raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(OpenartsError):
    pass


class InvalidJsonBody(InvalidRequest):
    pass


class InvalidObsPath(InvalidRequest):
    pass


class FlavorNotFound(InvalidRequest):
    pass


class FlavorOutOfRange(InvalidRequest):
    pass


class EngineNotFound(InvalidRequest):
    pass


class UnsupportedFilter(InvalidRequest):
    pass


class UnsupportedSort(InvalidRequest):
    pass


class QueryParamsError(InvalidRequest):
    pass


class DuplicateJobName(OpenartsError):
    pass


class JobNotFound(OpenartsError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"Training job (ID: {job_id}) not found.")


class TaskNotFound(OpenartsError):
    def __init__(self, job_id: str, task_id: str) -> None:
        super().__init__(f"Task {task_id!r} of training job (ID: {job_id}) not found.")


class NotAllowedToTerminate(OpenartsError):
    pass


class JobStatusChanged(OpenartsError):
    pass


class LogNotReady(OpenartsError):
    pass


class PreparationError(OpenartsError):
    """A job that cannot be prepared (missing code, boot file, engine): it ends Abnormal/CreateFailed."""


# -- security (openarts.security, openarts.api.auth) ------------------------------------------------
#
#   AuthenticationFailed     no, malformed, wrong, stale, replayed or revoked credentials (401 APIG.0301)
#   ProjectForbidden         an access key used outside its projects (403 ModelArts.0210)
#   TokenProjectMismatch     a token used outside its project (404 ModelArts.2786)
#   TooManyRequests          the credential's rate limit (429 ModelArts.2799)
#   RequestTooLarge          a body over the size limit (413 APIG.0201)
#   UriTooLong               a request URI over the size limit (414 APIG.0201)
#   InvalidPath              a path segment '.' or '..', or one with an encoded '/' (400 ModelArts.0101)


class AuthenticationFailed(OpenartsError):
    pass


class ProjectForbidden(OpenartsError):
    pass


class TokenProjectMismatch(OpenartsError):
    pass


class TooManyRequests(OpenartsError):
    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestTooLarge(OpenartsError):
    pass


class UriTooLong(OpenartsError):
    pass


class InvalidPath(OpenartsError):
    pass
