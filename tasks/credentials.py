"""Credentials for tasks: from the environment, else a Prefect Secret block.

Keys are fetched inside the task that uses them, so they are never a parameter or a log line.
"""

from __future__ import annotations

import os

TEACHER_KEY_BLOCK = "teacher-api-key"


def secret(env: str, block: str) -> str | None:
    """From the environment, else the Prefect Secret block of that name (None if neither)."""
    if os.environ.get(env):
        return os.environ[env]
    from prefect.blocks.system import Secret

    try:
        return Secret.load(block).get()
    except ValueError:  # no such block
        return None


def teacher_key() -> str | None:
    """The teacher's API key: $IRSFLOW_TEACHER_API_KEY, $DEEPSEEK_API_KEY, else the Secret block
    ``teacher-api-key``; fetched inside the task so it is never a parameter or a log line."""
    from irsflow.teacher.settings import KEY_ENV, key_from_env

    return key_from_env() or secret(KEY_ENV[-1], TEACHER_KEY_BLOCK)


def require_teacher_key() -> str:
    from irsflow.errors import ConfigError
    from irsflow.teacher.settings import KEY_ENV

    key = teacher_key()
    if not key:
        raise ConfigError(
            f"teacher.api_key: not set (export {' or '.join(KEY_ENV)}, "
            f"or create the Prefect Secret block {TEACHER_KEY_BLOCK!r})"
        )
    return key
