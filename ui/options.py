"""How the server is started: address, password, upload cap (no Gradio import: the CLI stays fast)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .views import FormError

AUTH_ENV = "SIGLIP_SEARCH_AUTH"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD = "25mb"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeOptions:
    host: str = DEFAULT_HOST
    port: int | None = DEFAULT_PORT
    auth: tuple[str, str] | None = None
    max_upload: str = DEFAULT_MAX_UPLOAD
    quiet: bool = True  # Gradio's own banner suggests share=True; we print our own line
    extra_blocked: list[str] = field(default_factory=list)


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """'user:password' -> ('user', 'password'); empty -> None (no password). The password may hold ':'."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise FormError("--auth and $SIGLIP_SEARCH_AUTH take USER:PASSWORD, both non-empty")
    return user, password
