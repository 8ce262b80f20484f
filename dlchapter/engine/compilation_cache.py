"""JAX's persistent compilation cache in the user's cache directory, so a rerun compiles nothing.

    from dlchapter.engine.compilation_cache import enable_compilation_cache
    enable_compilation_cache()          # ~/.cache/dlchapter/jax (or $XDG_CACHE_HOME/dlchapter/jax)

The `dlchapter` command and every `python -m experiments.NAME` launcher call it before any work
(`dlchapter.cli.launch`). ``DLCHAPTER_COMPILATION_CACHE=0`` turns it off; ``=1`` (or unset) uses
the default directory; an absolute path uses that directory. Any other value raises
`CompilationCacheError` before anything runs.

JAX writes one file per compiled program, keyed by the program, the compile options, the
backend and the jax/jaxlib versions, so a changed library or a new jax version simply misses.
`MIN_COMPILE_TIME_S` is 0: every program is cached, the chapter's train and evaluation programs
(0.4-1.3 s each to compile on a 2-core CPU, benchmarks/NOTES.md) and the ~30 small eager
programs a fresh process compiles once (init, zeros, key splits: ~3 s of a 9 s diamonds run
together). JAX's default of 1 s would skip nearly all of them. Writing a small entry costs about
a millisecond; `benchmarks/cold_start.py` measures what the cache gives end to end.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "DLCHAPTER_COMPILATION_CACHE"
MIN_COMPILE_TIME_S = 0.0
_OFF = ("0", "false", "no", "off")
_ON = ("", "1", "true", "yes", "on")


class CompilationCacheError(ValueError):
    """An unusable ``DLCHAPTER_COMPILATION_CACHE`` value or cache directory."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dlchapter/jax``, or ``~/.cache/dlchapter/jax`` when XDG_CACHE_HOME is unset or empty."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dlchapter" / "jax"


def cache_dir_from_environment() -> Path | None:
    """The directory ``DLCHAPTER_COMPILATION_CACHE`` asks for; None when it turns the cache off.

    Raises:
      CompilationCacheError: the value is neither on/off nor an absolute path.
    """
    value = os.environ.get(ENV_VAR, "").strip()
    if value.lower() in _OFF:
        return None
    if value.lower() in _ON:
        return default_cache_dir()
    if not os.path.isabs(value):
        raise CompilationCacheError(
            f"{ENV_VAR}={value!r} is neither 0/1 (off/on) nor an absolute directory; "
            f"set it to 0 to turn the persistent compilation cache off, or unset it"
        )
    return Path(value)


def enable_compilation_cache(
    cache_dir: Path | str | None = None, *, min_compile_time_s: float = MIN_COMPILE_TIME_S
) -> Path | None:
    """Points JAX's persistent compilation cache at `cache_dir` (created if missing).

    Args:
      cache_dir: where the compiled programs go; None reads ``DLCHAPTER_COMPILATION_CACHE``
        (`cache_dir_from_environment`), whose 0 turns the cache off.
      min_compile_time_s: programs that compile faster than this (seconds) are not written.

    Returns:
      The cache directory, or None when the environment turned the cache off.

    Raises:
      CompilationCacheError: a bad environment value, or a directory that cannot be created.

    Call it before the first program is compiled: JAX sets its cache up once per process, at the
    first compilation; this function resets that state so a late call still takes effect for
    programs compiled after it (programs already in memory are not written).
    """
    path = cache_dir_from_environment() if cache_dir is None else Path(cache_dir)
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CompilationCacheError(
            f"cannot create the compilation cache directory {path} ({error}); set {ENV_VAR}=0 or a writable path"
        ) from error
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    if jax.config.jax_compilation_cache_dir != str(path):
        jax_cache.reset_cache()  # JAX initializes its cache once; a new directory needs a fresh start
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # -1: no size floor (0 means "pick one")
    return path


_HITS = [0]  # programs this process loaded from the persistent cache (jax.monitoring's cache_hits events)
_LISTENING = [False]


def _count_hit(event: str, **kwargs: object) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _HITS[0] += 1


def cache_hits() -> int:
    """How many compiled programs this process has loaded from the persistent compilation cache so far.

    The first call starts counting (a `jax.monitoring` event listener); call it before a compilation to tell,
    by comparing with a call after it, whether that compilation was a cache hit.
    """
    if not _LISTENING[0]:
        import jax.monitoring

        jax.monitoring.register_event_listener(_count_hit)
        _LISTENING[0] = True
    return _HITS[0]
