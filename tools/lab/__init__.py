"""The quality lab: a small model trained here on countable one-object scenes, so the pack's techniques can be
shown to help (duplication, object scale, shape fidelity), not only to run.  Development-only: never loaded by the
shipped pack."""
