"""The one error a judge model's loading raises: its message says what to fix."""


class ModelLoadError(RuntimeError):
    """The model or adapter cannot be loaded; the message says what to fix."""


__all__ = ["ModelLoadError"]
