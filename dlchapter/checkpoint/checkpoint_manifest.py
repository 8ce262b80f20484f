"""The manifest written beside every checkpoint: what each array is, and checksums of everything.

For each leaf of the saved pytree the manifest records its path, shape, dtype
(typed PRNG keys: their key implementation and key-data layout) and a sha256
of its bytes; for the JSON metadata it records a sha256 of its canonical JSON
(sorted keys, no spaces). `dlchapter.checkpoint.store` uses it to name the exact
parameter that does not fit a template and to detect damaged arrays or edited
metadata that orbax and tensorstore would read back without a word.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

FORMAT = 2  # 2: adds "meta_sha256"; format 1 (arrays only) is still read
READABLE_FORMATS = (1, 2)


def path_str(path: tuple) -> str:
    """A leaf's tree path as `a/b/0`."""
    return jax.tree_util.keystr(path, simple=True, separator="/")


def is_key(leaf: Any) -> bool:
    """Whether `leaf` is a typed PRNG key array (or its abstract value)."""
    return jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key)


def _is_py_scalar(leaf: Any) -> bool:
    return isinstance(leaf, (bool, int, float)) and not isinstance(leaf, np.generic)


def describe(leaf: Any) -> tuple[tuple[int, ...], str]:
    """Shape and dtype name of an array, abstract array, typed key or scalar."""
    if is_key(leaf):
        return tuple(leaf.shape), str(leaf.dtype)
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return tuple(leaf.shape), jnp.dtype(leaf.dtype).name
    value = np.asarray(leaf)
    return value.shape, value.dtype.name


def fmt(shape: tuple[int, ...] | list[int], dtype: str) -> str:
    """`float32[6,32]`."""
    return f"{dtype}[{','.join(str(d) for d in shape)}]"


def digest(value: Any, dtype: str) -> str | None:
    """sha256 of the leaf's bytes as `dtype`; None where this host cannot see all of it."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return None
    array = np.ascontiguousarray(np.asarray(value).astype(jnp.dtype(dtype), copy=False))
    return hashlib.sha256(array.tobytes()).hexdigest()


def meta_digest(meta: Mapping[str, Any]) -> str:
    """sha256 of the metadata's canonical JSON (sorted keys, compact separators, NaN allowed)."""
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def fits(leaf: Any, entry: Mapping[str, Any]) -> bool:
    """Whether a template leaf can take the stored entry (Python scalars match by kind)."""
    shape, dtype = tuple(entry["shape"]), entry["dtype"]
    if _is_py_scalar(leaf):
        kind = np.bool_ if isinstance(leaf, bool) else np.integer if isinstance(leaf, int) else np.floating
        return shape == () and "key_impl" not in entry and jnp.issubdtype(jnp.dtype(dtype), kind)
    return describe(leaf) == (shape, dtype)


def prepare(state: PyTree, meta: Mapping[str, Any], checksums: bool) -> tuple[PyTree, dict[str, Any]]:
    """Replaces typed keys by their key data and builds the JSON manifest of `state` and `meta`."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(state)
    leaves, entries = [], {}
    for path, leaf in flat:
        name = path_str(path)
        if name in entries:
            raise ValueError(f"two leaves of the state share the path {name!r}; rename one")
        shape, dtype = describe(leaf)
        entry: dict[str, Any] = {"shape": list(shape), "dtype": dtype}
        if is_key(leaf):
            entry["key_impl"] = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
            entry["data_shape"], entry["data_dtype"] = list(leaf.shape), jnp.dtype(leaf.dtype).name
        if checksums:
            entry["sha256"] = digest(leaf, entry.get("data_dtype", dtype))
        entries[name] = entry
        leaves.append(leaf)
    manifest: dict[str, Any] = {"format": FORMAT, "leaves": entries}
    if checksums:
        manifest["meta_sha256"] = meta_digest(meta)
    return jax.tree_util.tree_unflatten(treedef, leaves), manifest


def check_manifest(manifest: Any, meta: Any) -> dict[str, Any]:
    """The manifest's leaf entries; raises ValueError when the manifest or the metadata is not as written."""
    if not isinstance(manifest, dict) or manifest.get("format") not in READABLE_FORMATS:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"unknown manifest format {found!r}")
    entries = manifest.get("leaves")
    if not isinstance(entries, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("shape"), list) and isinstance(e.get("dtype"), str)
        for e in entries.values()
    ):
        raise ValueError("its manifest does not list every array's shape and dtype")
    if not isinstance(meta, dict):
        raise TypeError(f"its metadata is a JSON {type(meta).__name__}, not an object")
    expected = manifest.get("meta_sha256")
    checksummed = any("sha256" in e for e in entries.values())
    if expected is None and checksummed and manifest["format"] >= 2:
        raise ValueError("its manifest has array checksums but no checksum of the metadata")
    if expected is not None and meta_digest(meta) != expected:
        raise ValueError("its metadata differs from the checksum written at save time")
    return entries
