"""Settings every test shares."""

import os

# The command line turns JAX's persistent compilation cache on by default (in the user's cache directory).
# Tests stay hermetic: off unless a test asks for it (tests/test_compilation_cache.py sets its own directory).
os.environ.setdefault("DLCHAPTER_COMPILATION_CACHE", "0")
