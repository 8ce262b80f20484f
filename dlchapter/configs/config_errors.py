"""`ConfigError`, the one error a bad flag, value or directory raises (printed as one `error:` line, exit 2).

Its own module so that `dlchapter.configs.config` (parsing, which raises it and
imports the checks) and `dlchapter.configs.config_checks` (which raise it) both
import it without importing each other in a cycle. Re-exported by
`dlchapter.configs.config`.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value, flag or path that cannot work; the message names the flag and what is allowed."""
