/**
 * Every failure a caller can act on has a code. The API maps codes to HTTP statuses in one place
 * (api/errors.ts); activities use the same codes as ApplicationFailure types.
 */
export enum ErrorCode {
  ValidationFailed = 'VALIDATION_FAILED',
  MalformedJson = 'MALFORMED_JSON',
  UnsupportedMediaType = 'UNSUPPORTED_MEDIA_TYPE',
  PayloadTooLarge = 'PAYLOAD_TOO_LARGE',
  RouteNotFound = 'ROUTE_NOT_FOUND',
  TemplateNotFound = 'TEMPLATE_NOT_FOUND',
  TemplateVersionNotFound = 'TEMPLATE_VERSION_NOT_FOUND',
  TemplateExists = 'TEMPLATE_EXISTS',
  TemplateTypeNotFound = 'TEMPLATE_TYPE_NOT_FOUND',
  TemplateTypeVersionNotFound = 'TEMPLATE_TYPE_VERSION_NOT_FOUND',
  TemplateTypeExists = 'TEMPLATE_TYPE_EXISTS',
  /** A type version used by a template version cannot change. */
  TemplateTypeVersionInUse = 'TEMPLATE_TYPE_VERSION_IN_USE',
  /** An upload or a git source was refused (details.reason says why: SOURCE_PATH_ESCAPES, GIT_URL_REFUSED, …). */
  SourceRejected = 'SOURCE_REJECTED',
  SourceNotFound = 'SOURCE_NOT_FOUND',
  BuildNotFound = 'BUILD_NOT_FOUND',
  BuildNotActive = 'BUILD_NOT_ACTIVE',
  /** Builds need a registry to push to (GLIDERGUN_REGISTRY). */
  BuildsUnavailable = 'BUILDS_UNAVAILABLE',
  TokenExists = 'TOKEN_EXISTS',
  TokenNotFound = 'TOKEN_NOT_FOUND',
  Unauthenticated = 'UNAUTHENTICATED',
  Forbidden = 'FORBIDDEN',
  IdempotencyKeyReused = 'IDEMPOTENCY_KEY_REUSED',
  IdempotencyKeyInUse = 'IDEMPOTENCY_KEY_IN_USE',
  DeploymentNotFound = 'DEPLOYMENT_NOT_FOUND',
  RunNotFound = 'RUN_NOT_FOUND',
  StateVersionNotFound = 'STATE_VERSION_NOT_FOUND',
  /** A state version's stored chunks are missing or altered: it cannot be restored or downloaded. */
  StateCorrupt = 'STATE_CORRUPT',
  /** A state version was sealed under another encryption key than the installation's: restore the key. */
  StateKeyMismatch = 'STATE_KEY_MISMATCH',
  /** A /state archive over the deployment's limit. */
  StateTooLarge = 'STATE_TOO_LARGE',
  /** A newer attempt of the same run is writing its state version; this one's writes are refused. */
  StateWriteSuperseded = 'STATE_WRITE_SUPERSEDED',
  NodeNotFound = 'NODE_NOT_FOUND',
  NodeExists = 'NODE_EXISTS',
  /** Only a node that has not enrolled yet gets a new enrolment token. */
  NodeNotPending = 'NODE_NOT_PENDING',
  /** The enrolment token is unknown, expired or used (one answer for all three). */
  EnrolmentRefused = 'ENROLMENT_REFUSED',
  /** The node was revoked: its calls are refused and it gets no certificate. */
  NodeRevoked = 'NODE_REVOKED',
  /** A node-only route called without the gateway's word for which node is calling. */
  NodeIdentityRequired = 'NODE_IDENTITY_REQUIRED',
  /** The run is not one of the calling node's active runs. */
  RunNotOfNode = 'RUN_NOT_OF_NODE',
  /** The CSR cannot be read, is not signed by its key, or has a key of another kind. */
  CertificateRequestInvalid = 'CERTIFICATE_REQUEST_INVALID',
  InvalidParameters = 'INVALID_PARAMETERS',
  LimitExceeded = 'LIMIT_EXCEEDED',
  UnknownAction = 'UNKNOWN_ACTION',
  RunInProgress = 'RUN_IN_PROGRESS',
  RunNotActive = 'RUN_NOT_ACTIVE',
  TargetUnavailable = 'TARGET_UNAVAILABLE',
  DependencyUnavailable = 'DEPENDENCY_UNAVAILABLE',
  Throttled = 'THROTTLED',
  /** An agent sent log bytes past what is stored (it must resend from `storedBytes`). */
  LogOffsetMismatch = 'LOG_OFFSET_MISMATCH',
  Internal = 'INTERNAL',
}

/** An error meant for the caller: its message is safe to show and its details are machine-readable. */
export class AppError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'AppError';
  }
}

export function notFound(code: ErrorCode, what: string, id: string): AppError {
  return new AppError(code, `${what} '${id}' does not exist`, { id });
}
