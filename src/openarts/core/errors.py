"""The domain exception tree. The API layer translates these (api/errors.py); nothing else does.

    OpenartsError
    ├── InvalidRequest          bad input: a field, a type, a limit          (400 ModelArts.2788 / others)
    │   ├── InvalidJsonBody     the body is not JSON / not an object / too deep (400 ModelArts.2787)
    │   │   └── UnsupportedMediaType  a body whose Content-Type is not JSON   (415 ModelArts.2787)
    │   ├── InvalidObsPath      an obs:// path that cannot be resolved       (400 ModelArts.2791)
    │   ├── FlavorNotFound      unknown flavor_id                            (400 ModelArts.2781)
    │   ├── FlavorOutOfRange    node_count beyond the flavor's max_num       (400 ModelArts.2793)
    │   ├── EngineNotFound      unknown engine                               (400 ModelArts.2780)
    │   ├── UnsupportedFilter   a search filter key/operator we do not know  (400 ModelArts.2789)
    │   ├── UnsupportedSort     a search sort_by we do not know              (400 ModelArts.2790)
    │   ├── QueryParamsError    a bad query parameter                        (400 ModelArts.2764)
    │   ├── InputsOutputsError  an input or output channel is malformed      (400 ModelArts.2753)
    │   ├── AlgorithmNotFound   algorithm.id / a subscription: none here     (400 ModelArts.2755)
    │   ├── CodeDirError        code_dir missing or malformed                (400 ModelArts.2757)
    │   ├── BootFileError       boot_file outside code_dir                   (400 ModelArts.2758)
    │   ├── CommandRequired     neither a command nor a boot file            (400 ModelArts.2806)
    │   └── NotAutoSearchJob    an auto-search operation on a job that is no search (400 ModelArts.2788)
    ├── DuplicateJobName        the name is taken in this project            (400 ModelArts.2751)
    ├── JobNotFound             no such job in this project                  (400 ModelArts.2775)
    ├── TaskNotFound            no such task in this job                     (400 ModelArts.2775)
    ├── TrialNotFound           no such trial in this search                 (400 ModelArts.2775)
    ├── SearchAlgorithmNotFound no such search algorithm or template type    (400 ModelArts.2755)
    ├── ExperimentNotFound      no such training experiment in this project  (400 ModelArts.2775)
    ├── DuplicateExperimentName the experiment name is taken in this project (400 ModelArts.2751)
    ├── ExperimentInUse         jobs still reference the experiment          (409 ModelArts.0409)
    ├── DuplicateAlgorithmName  the algorithm name is taken in this project  (400 ModelArts.2751)
    ├── AlgorithmInUse          unfinished jobs were made from the algorithm (409 ModelArts.0409)
    ├── NotAllowedToTerminate   the job is already final                     (409 ModelArts.2796)
    ├── JobStatusChanged        the change needs another phase               (409 ModelArts.2878)
    ├── LogNotReady             a task has no log yet                        (204, ModelArts.2776)
    ├── MetricsNotReady         the job has not run yet: no metrics          (204, ModelArts.2777)
    ├── NotImplementedOperation a ModelArts operation openarts does not offer (501, ModelArts.0501)
    ├── NotSupportedHere        an operation whose service this deployment lacks (501, ModelArts.4204)
    ├── AttemptFilesNotFound    an agent asked for files of an attempt the server has none of (404)
    └── PreparationError        a job cannot be prepared to run (not an API error: ends Abnormal)

A 204 answer has no body (HTTP allows none): the code above is the reference's, the client sees the status.
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


class UnsupportedMediaType(InvalidJsonBody):
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


class InputsOutputsError(InvalidRequest):
    pass


class AlgorithmNotFound(InvalidRequest):
    pass


class CodeDirError(InvalidRequest):
    pass


class BootFileError(InvalidRequest):
    pass


class CommandRequired(InvalidRequest):
    pass


class NotAutoSearchJob(InvalidRequest):
    def __init__(self, job_id: str, kind: str) -> None:
        super().__init__(f"Training job (ID: {job_id}) is not an auto-search job (its kind is {kind!r}, not "
                         "'autosearch_job'): it has no trials or parameter analysis.")


class DuplicateJobName(OpenartsError):
    pass


class JobNotFound(OpenartsError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"Training job (ID: {job_id}) not found.")


class TaskNotFound(OpenartsError):
    def __init__(self, job_id: str, task_id: str) -> None:
        super().__init__(f"Task {task_id!r} of training job (ID: {job_id}) not found.")


class TrialNotFound(OpenartsError):
    def __init__(self, job_id: str, trial_id: str, count: int) -> None:
        have = f"its trial ids are 0 to {count - 1}" if count else "it has no trial yet"
        super().__init__(f"Trial {trial_id[:64]!r} of auto-search job (ID: {job_id}) not found: {have}.")


class SearchAlgorithmNotFound(OpenartsError):
    """An auto-search YAML template of an unknown type or algorithm (ModelArts' "algorithm not found")."""


class ExperimentNotFound(OpenartsError):
    def __init__(self, experiment_id: str, where: str = "") -> None:
        super().__init__(f"Training experiment (ID: {experiment_id[:64]}) not found{where}.")


class DuplicateExperimentName(OpenartsError):
    def __init__(self, name: str) -> None:
        super().__init__(f"Training experiment name {name!r} already exists in this project.")


class ExperimentInUse(OpenartsError):
    """Deleting an experiment that training jobs still reference."""


class DuplicateAlgorithmName(OpenartsError):
    pass


class AlgorithmInUse(OpenartsError):
    """Deleting an algorithm that jobs still in Creating, Pending or Running were made from."""


class NotAllowedToTerminate(OpenartsError):
    pass


class JobStatusChanged(OpenartsError):
    pass


class LogNotReady(OpenartsError):
    pass


class MetricsNotReady(OpenartsError):
    pass


class NotImplementedOperation(OpenartsError):
    """A ModelArts training operation that openarts does not offer (yet)."""

    def __init__(self, operation: str, method: str, path: str) -> None:
        super().__init__(f"{operation} ({method} {path}) is a ModelArts training operation that openarts does not "
                         f"implement.")
        self.operation = operation


class NotSupportedHere(OpenartsError):
    """A ModelArts training operation on a job that this deployment cannot serve: the service behind it (a
    fine-tuning service, an image builder) is not part of openarts. Raised once the job is found."""

    def __init__(self, operation: str, method: str, path: str, why: str) -> None:
        super().__init__(f"{operation} ({method} {path}) is not supported by this deployment: {why}.")
        self.operation = operation


class AttemptFilesNotFound(OpenartsError):
    pass


class PreparationError(OpenartsError):
    """A job that cannot be prepared (missing code, boot file, engine): it ends Abnormal/CreateFailed."""


# -- security (openarts.security, openarts.api.auth) ------------------------------------------------
#
#   AuthenticationFailed     no, malformed, wrong, stale, replayed or revoked credentials (401 APIGW.0301)
#   ProjectForbidden         an access key used outside its projects (403 ModelArts.0210)
#   TokenProjectMismatch     a token used outside its project (404 ModelArts.2786)
#   TooManyRequests          the credential's rate limit (429 ModelArts.2799)
#   RequestTooLarge          a body over the size limit (413 APIGW.0201)
#   UriTooLong               a request URI over the size limit (414 APIGW.0201)
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


# -- internal: not the user's doing, never translated to a 4xx ---------------------------------------
#
#   RuntimeError
#   ├── IllegalTransition    a move core.phases does not allow: a bug (a 500 if it ever reached the API)
#   └── LostRace             a guarded write found the job no longer in the phase it expected; the
#                            transaction rolls back and the caller re-reads (store.jobs.transition)


class IllegalTransition(RuntimeError):
    """A caller asked for a phase move that core.phases does not allow: a bug, never user input."""


class LostRace(RuntimeError):
    """A compare-and-set lost: the job was no longer in the expected phase. Raised inside a transaction,
    so everything that transaction wrote rolls back with it; it can never be ignored."""

    def __init__(self, job_id: str, expected: str, to: str) -> None:
        super().__init__(f"job {job_id} is no longer {expected}: {expected} -> {to} not applied")
        self.job_id = job_id
