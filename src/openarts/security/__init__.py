"""Authentication, authorization and audit: AK/SK signatures (SDK-HMAC-SHA256), IAM-style tokens,
the credentials store (DATA_DIR/security.db, secret keys encrypted at rest), rate limiting, the
replay cache and the audit log. The ASGI boundary that uses them is openarts.api.auth."""
