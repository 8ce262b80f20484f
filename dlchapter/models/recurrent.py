"""Recurrent cells and layers written from the chapter's equations (Ng's notation).

Cells (one time step, ``__call__(carry, x_BxF) -> (new_carry, a_BxH)``):

* ``SimpleRNNCell``: a<t> = tanh(W_a [a<t-1>, x<t>] + b_a).
* ``GRUCell`` (full GRU, reset gate applied *before* the recurrent matmul)::

      G_r = sigmoid(W_r [c<t-1>, x<t>] + b_r)
      c~  = tanh(W_c [G_r * c<t-1>, x<t>] + b_c)
      G_u = sigmoid(W_u [c<t-1>, x<t>] + b_u)
      c<t> = G_u * c~ + (1 - G_u) * c<t-1>;   a<t> = c<t>

* ``LSTMCell``: c~ = tanh(W_c[a, x] + b_c), G_u, G_f, G_o = sigmoid(W_.[a, x] + b_.),
  c<t> = G_u * c~ + G_f * c<t-1>, a<t> = G_o * tanh(c<t>). Carry is ``(c, a)``.

Parameters are named after the gates: ``W_ga`` (H, H) multiplies a<t-1>, ``W_gx``
(F, H) multiplies x<t> and ``b_g`` (H,) is the bias of gate g, so Ng's
W_g [a, x] is ``a @ W_ga + x @ W_gx`` (row-vector batches, kernels stored
(in, out) like ``flax.linen.Dense``). Gates are fused into one matmul per step.
Init: glorot-uniform input kernels, orthogonal recurrent kernels, zero biases;
the LSTM forget bias starts at 1.0 (Keras ``unit_forget_bias``). Glorot and
orthogonal are drawn per gate, where Keras draws them over its fused (in, 4H)
kernel, so the init distributions (not the model) differ slightly.

Relation to other libraries (each tested in tests/models/test_recurrent.py):

* ``flax.linen.LSTMCell`` / ``OptimizedLSTMCell``: exactly the same function.
  Map ``ii, if, ig, io`` kernels <- ``W_ux, W_fx, W_cx, W_ox``; ``hi, hf, hg, ho``
  kernels <- ``W_ua, W_fa, W_ca, W_oa`` and their biases <- ``b_u, b_f, b_c, b_o``.
* ``flax.linen.GRUCell`` computes n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),
  h' = (1 - z) * n + z * h: Flax's z is our 1 - G_u (map W_iz, W_hz, b_iz to
  minus W_ux, W_ua, b_u) and it applies the reset gate *after* the recurrent
  matmul. ``GRUCell(reset_after=True)`` implements that variant (adding the
  recurrent candidate bias ``b_ca``) and equals Flax's cell exactly. The
  chapter's default ``reset_after=False`` differs only in the candidate:
  W_ca^T (G_r * c) here versus G_r * (W_ca^T c + b_hn) in Flax; the two agree
  when W_ca is diagonal and b_hn = 0, and not in general.
* Keras ``GRU``: ``reset_after=False`` is the chapter's cell (same parameter
  count 3H(H+F+1)); Keras's default ``reset_after=True`` is our
  ``reset_after=True`` plus redundant recurrent biases for r and u (Keras has
  3H(H+F+2) parameters, we and Flax have 3H(H+F+1)+H). Keras's update gate z
  is likewise our 1 - G_u.
* ``flax.linen.SimpleCell``: same function (i kernel/bias <- W_ax, b_a; h <- W_aa).

``RNN`` scans any such cell over (batch, timesteps, features) with
``nn.scan``; ``Bidirectional`` runs a forward and a length-aware backward RNN.
``RecurrentNet`` stacks them under a Dense head for the experiments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dlchapter.models.recurrent_ops import lstm_sequence

Array = jax.Array
Carry = Any
Dtype = Any
Initializer = Callable[..., Array]


class _GatedCell(nn.Module):
    """Shared attributes, per-gate parameters and zero carry for the cells."""

    features: int
    kernel_init: Initializer = nn.initializers.glorot_uniform()
    recurrent_kernel_init: Initializer = nn.initializers.orthogonal()
    bias_init: Initializer = nn.initializers.zeros_init()
    param_dtype: Dtype = jnp.float32

    def _gates(
        self, gates: str, in_features: int, bias_inits: dict[str, Initializer] | None = None
    ) -> tuple[Array, Array, Array]:
        """Creates ``W_ga, W_gx, b_g`` for each gate letter; returns them fused."""
        bias_inits = bias_inits or {}
        h = self.features
        w_a, w_x, b = [], [], []
        for g in gates:
            w_a.append(self.param(f"W_{g}a", self.recurrent_kernel_init, (h, h), self.param_dtype))
            w_x.append(self.param(f"W_{g}x", self.kernel_init, (in_features, h), self.param_dtype))
            b.append(self.param(f"b_{g}", bias_inits.get(g, self.bias_init), (h,), self.param_dtype))
        cat = lambda xs: jnp.concatenate(xs, axis=-1)  # noqa: E731
        return cat(w_a), cat(w_x), cat(b)

    @nn.nowrap
    def initialize_carry(self, batch_size: int, dtype: Dtype | None = None) -> Carry:
        """Zero state a<0> of shape (batch_size, features)."""
        return jnp.zeros((batch_size, self.features), dtype or self.param_dtype)


class SimpleRNNCell(_GatedCell):
    """Vanilla RNN step: a<t> = tanh(W_aa a<t-1> + W_ax x<t> + b_a); carry is a."""

    @nn.compact
    def __call__(self, carry: Array, x_BxF: Array) -> tuple[Array, Array]:
        """One step; returns (a<t>, a<t>)."""
        w_a, w_x, b = self._gates("a", x_BxF.shape[-1])
        a_BxH = jnp.tanh(carry @ w_a + x_BxF @ w_x + b)
        return a_BxH, a_BxH


class GRUCell(_GatedCell):
    """Full GRU step (reset, update gates; candidate memory); carry is c = a.

    ``reset_after=False`` (default) is the chapter's equation; ``True`` applies the
    reset gate after the recurrent matmul with an extra bias ``b_ca`` (Flax/cuDNN
    and Keras ``reset_after=True`` convention).
    """

    reset_after: bool = False

    @nn.compact
    def __call__(self, carry: Array, x_BxF: Array) -> tuple[Array, Array]:
        """One step; returns (c<t>, a<t>) with a<t> = c<t>."""
        c_prev = carry
        w_a, w_x, b = self._gates("ru", x_BxF.shape[-1])
        w_ca, w_cx, b_c = self._gates("c", x_BxF.shape[-1])
        z_r, z_u = jnp.split(c_prev @ w_a + x_BxF @ w_x + b, 2, axis=-1)
        gamma_r, gamma_u = jax.nn.sigmoid(z_r), jax.nn.sigmoid(z_u)
        if self.reset_after:
            b_ca = self.param("b_ca", self.bias_init, (self.features,), self.param_dtype)
            c_tilde = jnp.tanh(x_BxF @ w_cx + b_c + gamma_r * (c_prev @ w_ca + b_ca))
        else:
            c_tilde = jnp.tanh((gamma_r * c_prev) @ w_ca + x_BxF @ w_cx + b_c)
        c = gamma_u * c_tilde + (1.0 - gamma_u) * c_prev
        return c, c


class LSTMCell(_GatedCell):
    """LSTM step with update, forget and output gates; carry is ``(c, a)``.

    ``unit_forget_bias=True`` starts ``b_f`` at 1.0 (Keras's default).
    """

    unit_forget_bias: bool = True
    sequence_op = True  # __call__ also takes a whole time-major sequence (`RNN`'s fast path)
    sequence_fn = staticmethod(lstm_sequence)

    @nn.compact
    def __call__(
        self, carry: tuple[Array, Array], x_BxF: Array, mask_TxB: Array | None = None, unroll: int = 1
    ) -> tuple[tuple[Array, Array], Array]:
        """One step: ``((c<t>, a<t>), a<t>)``; or, for x of shape (T, B, F), all T steps at once.

        The sequence form returns ``((c<T>, a<T>), a_TxBxH)`` through `recurrent_ops.lstm_sequence` (same
        equations, hand-written backward pass); `mask_TxB` (bool) keeps a row's carry and zeroes its output
        where off, and `unroll` is its loop unroll. Both are ignored for one step.
        """
        c_prev, a_prev = carry
        forget = {"f": nn.initializers.ones_init()} if self.unit_forget_bias else None
        w_a, w_x, b = self._gates("cufo", x_BxF.shape[-1], forget)
        if x_BxF.ndim == 3:
            return self.sequence_fn(w_a, w_x, b, x_BxF, c_prev, a_prev, mask_TxB, unroll)
        z_c, z_u, z_f, z_o = jnp.split(a_prev @ w_a + x_BxF @ w_x + b, 4, axis=-1)
        c_tilde = jnp.tanh(z_c)
        gamma_u, gamma_f, gamma_o = jax.nn.sigmoid(z_u), jax.nn.sigmoid(z_f), jax.nn.sigmoid(z_o)
        c = gamma_u * c_tilde + gamma_f * c_prev
        a = gamma_o * jnp.tanh(c)
        return (c, a), a

    @nn.nowrap
    def initialize_carry(self, batch_size: int, dtype: Dtype | None = None) -> tuple[Array, Array]:
        """Zero ``(c<0>, a<0>)``, each (batch_size, features)."""
        zeros = jnp.zeros((batch_size, self.features), dtype or self.param_dtype)
        return zeros, zeros


def reverse_index(lengths_B: Array, timesteps: int) -> Array:
    """Per-row time index that reverses each row's real prefix and keeps padding.

    Row b maps t -> lengths[b] - 1 - t for t < lengths[b], else t; the map is its
    own inverse, so the same gather undoes it.
    """
    t_T = jnp.arange(timesteps)
    lengths_Bx1 = lengths_B[:, None]
    return jnp.where(t_T[None, :] < lengths_Bx1, lengths_Bx1 - 1 - t_T[None, :], t_T[None, :])


def _gather_time(x_BxT: Array, idx_BxT: Array) -> Array:
    """x[b, idx[b, t], ...] for arrays with any trailing axes."""
    idx = idx_BxT.reshape(idx_BxT.shape + (1,) * (x_BxT.ndim - 2))
    return jnp.take_along_axis(x_BxT, idx, axis=1)


def _one_dtype(carry: Carry, x: Array, param_dtype: Dtype) -> bool:
    """True when the carry, the inputs and the parameters share one dtype (the fused sequence op's case)."""
    return all(leaf.dtype == x.dtype for leaf in jax.tree.leaves(carry)) and jnp.dtype(param_dtype) == x.dtype


def _keep_where(m_B: Array, new: Array, old: Array) -> Array:
    """new where the row mask is on, old elsewhere, in old's dtype."""
    return jnp.where(m_B.reshape(m_B.shape + (1,) * (old.ndim - 1)), new, old).astype(old.dtype)


class RNN(nn.Module):
    """Runs ``cell`` over time on x of shape (batch, timesteps, features).

    Attributes:
      cell: a module with ``__call__(carry, x_BxF) -> (carry, y_BxH)`` and
        ``initialize_carry(batch_size, dtype)``.
      return_sequences: return all outputs (B, T, H) instead of the last (B, H).
      return_carry: also return the final carry, as ``(carry, outputs)``.
      reverse: process time backwards (Keras ``go_backwards``); outputs are put
        back in input order, so output t has seen x<t..T-1>.
      unroll: scan unroll factor.

    With ``lengths_B`` (right-padded rows), steps at t >= lengths[b] leave row b's
    carry unchanged and output zeros; with ``reverse`` only the real prefix is
    reversed. The "last" output is that of the last real step processed.
    Lengths must lie in [0, T] (not checked, to stay jit-friendly). The carry
    keeps the dtype of the initial carry (default: zeros in the dtype of x).
    """

    cell: nn.Module
    return_sequences: bool = False
    return_carry: bool = False
    reverse: bool = False
    unroll: int = 1

    @nn.compact
    def __call__(
        self, x_BxTxF: Array, initial_carry: Carry | None = None, lengths_B: Array | None = None
    ) -> Array | tuple[Carry, Array]:
        """Scans the cell; returns outputs, or ``(final_carry, outputs)``."""
        batch, timesteps = x_BxTxF.shape[:2]
        carry = self.cell.initialize_carry(batch, x_BxTxF.dtype) if initial_carry is None else initial_carry
        masked = lengths_B is not None
        lengths_B = jnp.full((batch,), timesteps, jnp.int32) if lengths_B is None else jnp.asarray(lengths_B)
        mask_BxT = jnp.arange(timesteps)[None, :] < lengths_B[:, None]
        idx_BxT = reverse_index(lengths_B, timesteps) if self.reverse else None
        # Without lengths every row is reversed whole: a flip, not a per-row gather (and no scatter in its gradient).
        xs = (_gather_time(x_BxTxF, idx_BxT) if masked else jnp.flip(x_BxTxF, 1)) if self.reverse else x_BxTxF
        if getattr(self.cell, "sequence_op", False) and _one_dtype(carry, xs, self.cell.param_dtype):
            carry, ys_TxBxH = self.cell(carry, jnp.swapaxes(xs, 0, 1), mask_BxT.T if masked else None, self.unroll)
            if not masked and not self.return_sequences:  # every row's last step is T-1: a static slice
                return (carry, ys_TxBxH[-1]) if self.return_carry else ys_TxBxH[-1]
            return self._outputs(carry, jnp.swapaxes(ys_TxBxH, 0, 1), idx_BxT, lengths_B, masked)

        def step(cell: nn.Module, carry: Carry, inputs: tuple[Array, Array]) -> tuple[Carry, Array]:
            x_BxF, m_B = inputs
            new_carry, y_BxH = cell(carry, x_BxF)
            if not masked:
                return jax.tree.map(lambda n, o: n.astype(o.dtype), new_carry, carry), y_BxH
            new_carry = jax.tree.map(lambda n, o: _keep_where(m_B, n, o), new_carry, carry)
            return new_carry, _keep_where(m_B, y_BxH, jnp.zeros_like(y_BxH))

        scan = nn.scan(
            step,
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=1,
            out_axes=1,
            unroll=self.unroll,
        )
        carry, ys_BxTxH = scan(self.cell, carry, (xs, mask_BxT))
        return self._outputs(carry, ys_BxTxH, idx_BxT, lengths_B, masked)

    def _outputs(self, carry: Carry, ys_BxTxH: Array, idx_BxT: Array | None, lengths_B: Array, masked: bool) -> Any:
        if self.return_sequences:
            if self.reverse:
                ys_BxTxH = _gather_time(ys_BxTxH, idx_BxT) if masked else jnp.flip(ys_BxTxH, 1)
            outputs = ys_BxTxH
        elif not masked:
            outputs = ys_BxTxH[:, -1]
        else:
            last_B = jnp.maximum(lengths_B - 1, 0)
            outputs = _gather_time(ys_BxTxH, last_B[:, None])[:, 0]
        return (carry, outputs) if self.return_carry else outputs


MERGE_MODES: dict[str, Callable[[Array, Array], Array]] = {
    "concat": lambda f, b: jnp.concatenate([f, b], axis=-1),
    "sum": jnp.add,
    "mul": jnp.multiply,
    "ave": lambda f, b: (f + b) / 2,
}


class Bidirectional(nn.Module):
    """Forward RNN plus a (length-aware) reversed RNN, outputs merged like Keras.

    ``cell`` is cloned for each direction (independent weights, under
    ``forward``/``backward``); ``backward_cell`` overrides the backward one.
    ``initial_carry`` is ``(forward_carry, backward_carry)`` or None; the
    returned carry (with ``return_carry``) has the same structure.
    """

    cell: nn.Module
    backward_cell: nn.Module | None = None
    return_sequences: bool = False
    return_carry: bool = False
    merge: str = "concat"
    unroll: int = 1

    @nn.compact
    def __call__(
        self,
        x_BxTxF: Array,
        initial_carry: tuple[Carry, Carry] | None = None,
        lengths_B: Array | None = None,
    ) -> Array | tuple[tuple[Carry, Carry], Array]:
        """Runs both directions; merged outputs of shape (B, [T,] 2H) for concat."""
        if self.merge not in MERGE_MODES:
            raise ValueError(f"merge={self.merge!r}; expected one of {sorted(MERGE_MODES)}")
        back = self.cell if self.backward_cell is None else self.backward_cell
        kw = dict(return_sequences=self.return_sequences, return_carry=True, unroll=self.unroll)
        fw = RNN(self.cell.clone(), name="forward", **kw)
        bw = RNN(back.clone(), reverse=True, name="backward", **kw)
        init_f, init_b = (None, None) if initial_carry is None else initial_carry
        carry_f, y_f = fw(x_BxTxF, init_f, lengths_B)
        carry_b, y_b = bw(x_BxTxF, init_b, lengths_B)
        outputs = MERGE_MODES[self.merge](y_f, y_b)
        return ((carry_f, carry_b), outputs) if self.return_carry else outputs


# XLA's defaults plus 512-bit vectors where the CPU has them (XLA prefers 256 by default; where AVX-512 is
# missing the option changes nothing).
RECURRENT_CPU_COMPILER_OPTIONS: dict[str, str] = {"xla_cpu_prefer_vector_width": "512"}

CELLS: dict[str, type[_GatedCell]] = {
    "simple_rnn": SimpleRNNCell,
    "gru": GRUCell,
    "lstm": LSTMCell,
}


class RecurrentNet(nn.Module):
    """Stacked recurrent layers and a Dense head (logits or values).

    Attributes:
      cell: key of ``CELLS`` ("simple_rnn", "gru", "lstm").
      hidden: units per direction in every recurrent layer.
      out_features: width of the Dense head (no activation: logits/values).
      num_layers: recurrent layers; all but the last return sequences.
      bidirectional: wrap each layer in ``Bidirectional`` (concat).
      return_sequences: apply the head at every step, (B, T, out) instead of (B, out).
      unroll: time steps per iteration of the scan (Keras's ``unroll``; slower on CPU here, benchmarks/NOTES.md).
    """

    cell: str
    hidden: int
    out_features: int
    num_layers: int = 1
    bidirectional: bool = False
    return_sequences: bool = False
    unroll: int = 1

    @nn.nowrap
    def cpu_compiler_options(self) -> dict[str, str] | None:
        """XLA:CPU options for `Trainer(cpu_compiler_options=...)`: `RECURRENT_CPU_COMPILER_OPTIONS`, every cell.

        XLA's default single-core YNNPACK dots, not the multi-threaded Eigen dots
        `dlchapter.engine.train.CPU_COMPILER_OPTIONS` picks for the MLPs and the CNN (LSTM 5.5 vs 7.1 CPU ms per
        step, GRU 3.5 vs 3.9), and 512-bit vectors for the gates' element-wise code (LSTM step 4-7% faster, GRU
        ~3% less CPU time); benchmarks/NOTES.md, "The RNNs" and "Nov 30, third session".
        """
        return dict(RECURRENT_CPU_COMPILER_OPTIONS)

    @nn.compact
    def __call__(self, x_BxTxF: Array, lengths_B: Array | None = None, *, train: bool = False) -> Array:
        """Maps (B, T, F) inputs to (B, out_features) or (B, T, out_features).

        `train` is accepted for the training engine's uniform call; the net has no dropout.
        """
        del train
        if self.cell not in CELLS:
            raise ValueError(f"cell={self.cell!r}; expected one of {sorted(CELLS)}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers={self.num_layers}; expected >= 1")
        cell_cls = CELLS[self.cell]
        h = x_BxTxF
        for i in range(self.num_layers):
            seq = self.return_sequences or i < self.num_layers - 1
            # parent=None: the layer adopts the cell, so params sit at rnn_i/cell.
            cell = cell_cls(self.hidden, parent=None)
            if self.bidirectional:
                layer = Bidirectional(cell, return_sequences=seq, unroll=self.unroll, name=f"rnn_{i}")
            else:
                layer = RNN(cell, return_sequences=seq, unroll=self.unroll, name=f"rnn_{i}")
            h = layer(h, lengths_B=lengths_B)
        return nn.Dense(self.out_features, name="head")(h)
