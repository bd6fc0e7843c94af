"""ECR emulation: moto's ECR hands out a deterministic login, the TLS registry accepts it.

moto's `get_authorization_token` returns base64("AWS:<account>-auth-token") for the
default account; `harness up` checks that against the running moto (venvtasks.py)
and fails loudly if a moto upgrade changes it.
"""

USER = "AWS"
ACCOUNT = "123456789012"
REGION = "us-east-1"


def password() -> str:
    return f"{ACCOUNT}-auth-token"
