"""Secrets kept out of everything a run writes: config.yaml, log.txt, env.json, the
checkpoint's recipe, tracker params. One module, applied at every sink (docs/runs.md).

Three kinds of secret are recognised:
- recipe values whose key looks secret (`*KEY*`, `*TOKEN*`, `*SECRET*`, `*PASSWORD*`,
  case-insensitive): replaced by `***` wherever the recipe is written; tubelet's own parameters
  that merely contain such a word (`input_key`, `class_token`) are listed in `NOT_SECRET`, and a
  test keeps that list in step with the registered parameters;
- the values of environment variables whose name looks secret (`WANDB_API_KEY`, `HF_TOKEN`):
  replaced wherever they appear in written text;
- credentials inside URLs: `https://user:pw@host` -> `https://user:***@host`.

Only what is *written* is redacted; the in-memory recipe keeps the real values (a tracking
URI with credentials still connects). No imports beyond the standard library.
"""
from __future__ import annotations

import logging
import os
import re
from typing import Any

MASK = "***"
SECRET_NAME = re.compile(r"key|token|secret|passw(or)?d", re.IGNORECASE)
# tubelet's own parameters whose names contain a secret word but hold none (a batch key, a
# flag, a count). tests/test_redact.py fails when a registered parameter matches SECRET_NAME
# and is not listed here, so each new one is a decision.
NOT_SECRET = frozenset({"input_key", "target_key", "video_key", "class_token", "features_key",
                        "targets_key", "view_keys",  # the batch keys of the two views
                        "custom_keys"})  # optimizer name patterns -> lr_mult, decay_mult
# user:password@ in a URL's authority; the user name stays, the password goes
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^\s:/@]*):"
                              r"(?P<pw>[^\s/@]+)@")
MIN_ENV_SECRET = 4  # shorter values ("1", "no") would mask ordinary text


def is_secret_name(name: str) -> bool:
    """Whether a recipe key or an environment variable's name looks like it holds a secret."""
    return name not in NOT_SECRET and bool(SECRET_NAME.search(name))


def env_secrets(environ: dict[str, str] | None = None) -> list[str]:
    """The values of the secret-looking environment variables, longest first (so a value that
    contains another is masked whole)."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if is_secret_name(k) and len(v) >= MIN_ENV_SECRET}
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, *, secrets: list[str] | None = None) -> str:
    """`text` with URL credentials and the secret environment values masked."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    for value in env_secrets() if secrets is None else secrets:
        text = text.replace(value, MASK)
    return text


def redact_config(value: Any, *, secrets: list[str] | None = None) -> Any:
    """A copy of a recipe (plain dicts, lists, scalars) fit to write: string values under a
    secret-looking key masked whole, every other string through `redact_text`. Numbers and
    booleans stay (a count or a flag is no credential)."""
    secrets = env_secrets() if secrets is None else secrets
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and is_secret_name(k) and isinstance(v, str)
                    else redact_config(v, secrets=secrets)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_config(v, secrets=secrets) for v in value]
    if isinstance(value, str):
        return redact_text(value, secrets=secrets)
    return value


def redact_argv(argv: list[str], *, secrets: list[str] | None = None) -> list[str]:
    """A command line fit to write: an override `some.api_key=VALUE` loses its value, and
    every argument goes through `redact_text`."""
    out = []
    for arg in argv:
        key, eq, _ = arg.partition("=")
        if eq and is_secret_name(key.rsplit(".", 1)[-1]):
            arg = f"{key}={MASK}"
        out.append(redact_text(arg, secrets=secrets))
    return out


class RedactingFormatter(logging.Formatter):
    """A log formatter whose lines (tracebacks included) pass through `redact_text`: for
    log.txt and the console alike."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.secrets = env_secrets()  # read once: the environment does not change mid-run

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record), secrets=self.secrets)
