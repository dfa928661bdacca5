"""The application core: where a ticket becomes an answer (service), the judge kept loaded per
process (judges), uploads, the answer and feedback log (feedback), what an answer shows (views)
and the state folder (home). The interfaces (ui/) drive it; it never imports them.

Public faces, importable from `app` (loaded on first use, so `import app.home` stays light):
"""

import importlib

_EXPORTS = {
    "AgentHelper": "app.service", "Answer": "app.service", "MAX_TICKET_CHARS": "app.service",
    "Home": "app.home", "load_embedder": "app.home", "open_store": "app.home",
    "FeedbackStore": "app.feedback", "FeedbackRecord": "app.feedback", "FeedbackError": "app.feedback",
    "UnknownAnswer": "app.feedback", "export_feedback": "app.feedback",
    "UploadRejected": "app.uploads", "sanitize_filename": "app.uploads",
    "default_model_config": "app.judges", "AnswerView": "app.views",
}
__all__ = sorted(_EXPORTS)
__doc__ += ", ".join(__all__) + "."


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
