"""Per-variant regression kernels, written once against the Python array API.

The same functions run on NumPy (CPU, BLAS on all cores) and on PyTorch (a CUDA GPU
when one is present, or its CPU device in tests): every operation goes through the
namespace ``xp`` that :func:`array_api_compat.array_namespace` returns for the inputs.

Linear model (PLINK 2 ``--glm`` on a quantitative phenotype). With ``Q`` an orthonormal
basis of the intercept and covariates on the analysed samples and ``y`` already
residualised on ``Q`` (both done once per phenotype), a variant's regression on its
called samples ``S`` (missing calls drop the sample, as PLINK 2 does) needs only
``A = Q_S'Q_S = I - Q_M'Q_M``, ``b = Q_S'g``, ``Q_S'y = -Q_M'y_M`` and three sums of
squares. The missing-sample terms ``Q_M'Q_M``, ``Q_M'y_M``, ``y_M'y_M`` are gathered from the
few missing samples' rows of ``Q`` (a batched product over each variant's padded list
of missing samples): a low-rank correction of the complete-data fit, never a refit,
costing ``O(missing × k²)`` per variant instead of ``O(n × k)``. A ``k × k`` solve per variant
(batched) finishes the Frisch–Waugh–Lovell partial regression.

Logistic model. Newton–Raphson (IRLS) on the full model ``[Q, g]`` for a whole block of
variants at once, starting from the covariates-only fit; missing calls get weight 0.
The covariate block of the information matrix is again one product of the weights with
the per-sample products of ``Q``. Variants that do not converge are handed back for
Firth regression (:mod:`medlake.omics.gwas.firth`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace

Array = Any  # an array of the namespace in use (numpy.ndarray or torch.Tensor)


def pair_products(xp: Any, q: Array) -> Array:
    """Per-sample products ``q_i q_i'`` as ``(n, k(k+1)/2)``, upper triangle row-major."""
    k = q.shape[1]
    rows, cols = np.triu_indices(k)
    return q[:, rows] * q[:, cols]


def unpack_symmetric(xp: Any, packed: Array, k: int) -> Array:
    """``(B, k(k+1)/2)`` upper triangles back to ``(B, k, k)`` symmetric matrices."""
    rows, cols = np.triu_indices(k)
    full = xp.zeros((packed.shape[0], k * k), dtype=packed.dtype, device=_device(packed))
    full[:, rows * k + cols] = packed
    full[:, cols * k + rows] = packed
    return xp.reshape(full, (packed.shape[0], k, k))


def solve(xp: Any, a: Array, b: Array) -> Array:
    """Batched ``a x = b``; a singular system gives NaN for its variant, not an error."""
    try:
        return xp.linalg.solve(a, b)
    except Exception:  # numpy LinAlgError / torch _LinAlgError: redo one by one
        out = xp.full(b.shape, float("nan"), dtype=b.dtype, device=_device(b))
        for i in range(a.shape[0]):
            try:
                out[i, ...] = xp.linalg.solve(a[i, ...], b[i, ...])
            except Exception:  # this variant's system is singular: NaN
                continue
        return out


def _device(x: Array) -> Any:
    from array_api_compat import device

    return device(x)


def missing_index(missing: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray | None:
    """Each row's missing columns of a ``(B, n)`` mask, padded with ``n`` to ``(B, m)``.

    ``m`` is the largest count in the block; None when nothing is missing. Built on the
    host with NumPy (a ``nonzero`` pass), then handed to the kernel's namespace.
    """
    if counts is None:
        counts = np.count_nonzero(missing, axis=1)
    if not counts.any():
        return None
    flat = np.flatnonzero(missing)  # cheaper than 2-D nonzero on a sparse mask
    rows, cols = np.divmod(flat, missing.shape[1])
    starts = np.cumsum(counts) - counts
    padded = np.full((missing.shape[0], int(counts.max())), missing.shape[1], np.int64)
    padded[rows, np.arange(rows.size) - starts[rows]] = cols
    return padded


@dataclass
class LinearSetup:
    """What the linear kernel needs once per phenotype (arrays in one namespace)."""

    q: Array  # (n + 1, k) orthonormal basis of intercept + covariates; last row 0 (padding)
    y: Array  # (n + 1,) phenotype residualised on q; last entry 0 (padding)
    yy: float  # y'y
    qy: Array  # (n, k + 1): [q y] without the padding row, for one product per block


def linear_setup(q: Array, y: Array) -> LinearSetup:
    """Residualise ``y`` on ``q`` once; append the zero row that padded indices point at."""
    xp = array_namespace(q, y)
    y_r = y - q @ (q.T @ y)
    zero_row = xp.zeros((1, q.shape[1]), dtype=q.dtype, device=_device(q))
    q_pad = xp.concat([q, zero_row], axis=0)
    y_pad = xp.concat([y_r, xp.zeros((1,), dtype=y.dtype, device=_device(y))])
    qy = xp.concat([q, y_r[:, None]], axis=1)
    return LinearSetup(q=q_pad, y=y_pad, yy=float(xp.sum(y_r * y_r)), qy=qy)


def linear_block(setup: LinearSetup, g: Array, missing: Array | None) -> dict[str, Array]:
    """Linear regression of the phenotype on each variant of a block, covariates adjusted.

    Parameters
    ----------
    setup : LinearSetup
    g : array, (B, n)
        A1 dosages, 0 where the call is missing.
    missing : integer array (B, m) or None
        Each variant's missing samples (indices into the n samples), padded with ``n``
        to the block's largest count; None when no call in the block is missing.

    Returns
    -------
    dict
        ``beta``, ``se``, ``obs`` (called samples) and ``ss`` (the genotype's residual sum
        of squares after the covariates), each ``(B,)``.
    """
    xp = array_namespace(g)
    k = setup.q.shape[1]
    n = setup.q.shape[0] - 1
    by = g @ setup.qy  # one pass over g: (B, k) = Q_S'g (g is 0 on missing calls), and g'y
    b, gy = by[:, :k], by[:, k]
    gg = xp.vecdot(g, g)
    if missing is None:
        # A = I, Q'y = 0: the complete-data partial regression
        gg_c = gg - xp.sum(b * b, axis=1)
        gy_c = gy
        yy_c = xp.full_like(gg, setup.yy)
        obs = xp.full_like(gg, float(n))
    else:
        nb, m = missing.shape
        flat = xp.reshape(missing, (nb * m,))
        q_m = xp.reshape(xp.take(setup.q, flat, axis=0), (nb, m, k))  # padding rows are 0
        y_m = xp.reshape(xp.take(setup.y, flat, axis=0), (nb, m))
        eye = xp.eye(k, dtype=g.dtype, device=_device(g))
        a = eye[None, :, :] - xp.matrix_transpose(q_m) @ q_m  # Q_S'Q_S = I - Q_M'Q_M
        qy = -xp.sum(q_m * y_m[:, :, None], axis=1)  # Q_S'y = -Q_M'y_M (y is residualised)
        rhs = xp.stack([b, qy], axis=2)  # (B, k, 2)
        sol = solve(xp, a, rhs)
        u, v = sol[:, :, 0], sol[:, :, 1]
        gg_c = gg - xp.sum(b * u, axis=1)
        gy_c = gy - xp.sum(b * v, axis=1)
        yy_c = (setup.yy - xp.sum(y_m * y_m, axis=1)) - xp.sum(qy * v, axis=1)
        obs = float(n) - xp.sum(xp.astype(missing < n, g.dtype), axis=1)
    beta = gy_c / gg_c
    rss = yy_c - beta * gy_c
    df = obs - float(k + 1)
    se = xp.sqrt(rss / df / gg_c)
    return {"beta": beta, "se": se, "obs": obs, "ss": gg_c}


@dataclass
class LogisticSetup:
    """What the logistic kernel needs once per phenotype."""

    q: Array  # (n, k)
    y: Array  # (n,) 0/1
    qq: Array  # (n, k(k+1)/2) per-sample products of q
    gamma0: Array  # (k,) covariates-only fit on all analysed samples
    first: Array  # (n, k + 2): [w0 q, y - mu0, w0] of the null fit, for the first step
    info0: Array  # (k, k): q' W0 q of the null fit
    null_pad: Array  # (n + 1, k + 2): [q, w0, y - mu0] with a zero padding row


def logistic_setup(q: Array, y: Array, max_iter: int = 50) -> LogisticSetup:
    """Fit the covariates-only model once (its coefficients start every variant's fit)."""
    xp = array_namespace(q, y)
    k = q.shape[1]
    gamma = xp.zeros((k,), dtype=q.dtype, device=_device(q))
    for _ in range(max_iter):
        mu = 1.0 / (1.0 + xp.exp(-(q @ gamma)))
        info = q.T @ (q * (mu * (1.0 - mu))[:, None])
        step = xp.linalg.solve(info, (q.T @ (y - mu))[:, None])[:, 0]
        gamma = gamma + step
        if float(xp.max(xp.abs(step))) < 1e-12:
            break
    mu = sigmoid(xp, q @ gamma)
    w0, r0 = mu * (1.0 - mu), y - mu
    first = xp.concat([q * w0[:, None], r0[:, None], w0[:, None]], axis=1)
    null = xp.concat([q, w0[:, None], r0[:, None]], axis=1)
    null_pad = xp.concat([null, xp.zeros((1, k + 2), dtype=q.dtype, device=_device(q))], axis=0)
    return LogisticSetup(
        q=q,
        y=y,
        qq=pair_products(xp, q),
        gamma0=gamma,
        first=first,
        info0=q.T @ (q * w0[:, None]),
        null_pad=null_pad,
    )


def _first_step(
    setup: LogisticSetup, g: Array, missing: Array | None
) -> tuple[Array, Array, Array]:
    """The first Newton step from the null fit ``(gamma0, 0)``, for a whole block.

    There every variant's fitted values are the null model's, so the step needs no
    per-sample work beyond one product ``g @ [W0 q, y - mu0, W0]`` and ``g²``; samples
    whose call is missing are taken out by a low-rank correction over their few rows
    (``missing``: padded indices as for :func:`linear_block`). Returns ``(gamma, beta,
    info)``, ``info`` the null fit's information matrix of each variant's model.
    """
    xp = array_namespace(g)
    k = setup.q.shape[1]
    nb = g.shape[0]
    prod = g @ setup.first  # (B, k + 2)
    cg, score_b = prod[:, :k], prod[:, k]
    gg = (g * g) @ setup.first[:, k + 1]
    cc = xp.broadcast_to(setup.info0[None, :, :], (nb, k, k))
    score_c = xp.zeros((nb, k), dtype=g.dtype, device=_device(g))  # Q'(y - mu0) = 0
    if missing is not None:
        m = missing.shape[1]
        rows = xp.reshape(
            xp.take(setup.null_pad, xp.reshape(missing, (nb * m,)), axis=0), (nb, m, k + 2)
        )
        q_m, w_m, r_m = rows[:, :, :k], rows[:, :, k], rows[:, :, k + 1]
        cc = cc - xp.matrix_transpose(q_m * w_m[:, :, None]) @ q_m
        score_c = -xp.sum(q_m * r_m[:, :, None], axis=1)
    top = xp.concat([cc, cg[:, :, None]], axis=2)
    bottom = xp.concat([cg, gg[:, None]], axis=1)[:, None, :]
    info = xp.concat([top, bottom], axis=1)
    score = xp.concat([score_c, score_b[:, None]], axis=1)
    step = solve(xp, info, score[:, :, None])[:, :, 0]
    return setup.gamma0[None, :] + step[:, :k], step[:, k], info


def sigmoid(xp: Any, x: Array) -> Array:
    """Logistic function in one pass where the library has one (SciPy's expit, torch's
    sigmoid); the array API has none, so others get the plain formula."""
    from array_api_compat import is_numpy_namespace, is_torch_namespace

    if is_numpy_namespace(xp):
        from scipy.special import expit

        return expit(x)
    if is_torch_namespace(xp):
        import torch

        return torch.sigmoid(x)
    return 1.0 / (1.0 + xp.exp(-x))


def sigmoid_(xp: Any, x: Array) -> Array:
    """Logistic function computed in the memory of ``x`` (returned): NumPy's ``exp`` is
    vectorised (SciPy's ``expit`` is several times slower); torch has ``sigmoid_``."""
    from array_api_compat import is_numpy_namespace, is_torch_namespace

    if is_numpy_namespace(xp):
        np.negative(x, out=x)
        np.exp(x, out=x)  # overflows to inf for eta < -709: 1 / inf is the right 0
        x += 1.0
        return np.reciprocal(x, out=x)
    if is_torch_namespace(xp):
        return x.sigmoid_()
    return sigmoid(xp, x)


def logistic_block(
    setup: LogisticSetup,
    g: Array,
    observed: Array,
    missing: Array | None = None,
    *,
    max_iter: int = 30,
    tol: float = 1e-6,
) -> dict[str, Array]:
    """Logistic regression per variant of a block by batched Newton–Raphson.

    ``g`` is ``(B, n)`` A1 dosage (0 where missing), ``observed`` ``(B, n)`` 1.0 where the
    call is present, ``missing`` the padded indices of missing calls (see
    :func:`missing_index`; None when none). Returns ``beta``, ``se``, ``obs`` and
    ``converged`` (bool) per variant; non-converged or non-finite fits are for the
    caller's Firth fallback. The first step is :func:`_first_step`.

    A variant is done once an exact Newton step (information and score at the same
    point) is below ``tol`` (relative): the convergence is quadratic, so the estimate is
    then exact to ~``tol²``, and the SE comes from that information (relative error
    ~``tol``). Getting there, each iteration first takes a chord step: the score at the
    current point with the null fit's information, which costs a third of an exact
    step (the covariate block ``Q'WQ`` of the information is most of the work) and
    contracts the error by ``O(|beta|)`` per iteration for the small effects of most
    variants. Only where that step is already below ``tol`` is the exact information
    computed, at the same point, to take the final Newton step; a variant whose chord
    steps shrink slowly (a large effect) switches to exact Newton steps.
    """
    xp = array_namespace(g)
    q, y, k = setup.q, setup.y, setup.q.shape[1]
    nb, n_samples = g.shape
    dev = _device(g)
    gamma, beta, info_null = _first_step(setup, g, missing)
    gamma = xp.asarray(gamma, copy=True)
    var = xp.full((nb,), float("nan"), dtype=g.dtype, device=dev)
    converged = np.zeros(nb, dtype=bool)
    newton = np.zeros(nb, dtype=bool)  # chord steps too slow: exact Newton steps
    last = np.full(nb, np.inf)  # each variant's last chord step size
    # without missing calls every observed weight is 1: no masking passes
    masked = missing is None and not bool(_host(xp.all(observed == 1.0)))
    e_last = xp.zeros((1, k + 1, 1), dtype=g.dtype, device=dev)
    e_last[0, k, 0] = 1.0
    if missing is not None:
        # Missing calls by low-rank corrections: weights and residuals are computed for
        # every sample (g is 0 there) and the few missing samples' terms subtracted.
        m = missing.shape[1]
        present = missing < n_samples
        valid_all = xp.astype(present, g.dtype)
        clipped_all = xp.where(present, missing, xp.zeros_like(missing))
        flat = xp.reshape(missing, (nb * m,))
        qm_all = xp.reshape(xp.take(setup.null_pad, flat, axis=0), (nb, m, k + 2))[:, :, :k]
    for _ in range(max_iter):
        active = np.flatnonzero(~converged)
        if active.size == 0:
            break
        na = active.size
        idx = None if na == nb else xp.asarray(active, device=dev)

        def rows(a: Array, idx: Array | None = idx) -> Array:
            return a if idx is None else xp.take(a, idx, axis=0)

        ga, gam, bet = rows(g), rows(gamma), rows(beta)
        # Few passes over the (variants × samples) arrays, most of them in place: these
        # passes, not the products, are what an iteration costs.
        eta = gam @ q.T
        eta += bet[:, None] * ga
        mu = sigmoid_(xp, eta)  # eta's memory now holds mu
        r = y[None, :] - mu
        if masked:
            r *= rows(observed)
        score_c = r @ q
        score_b = xp.vecdot(r, ga)
        if missing is not None:
            clipped, valid, q_m = rows(clipped_all), rows(valid_all), rows(qm_all)
            r_m = xp.take_along_axis(r, clipped, axis=1) * valid
            score_c = score_c - xp.sum(q_m * r_m[:, :, None], axis=1)
        score = xp.concat([score_c, score_b[:, None]], axis=1)
        step = solve(xp, rows(info_null), score[:, :, None])[:, :, 0]  # chord step
        size_c = _host(xp.max(xp.abs(step), axis=1) / (1.0 + xp.abs(bet + step[:, k])))
        exact = newton[active] | ~(size_c >= tol)  # NaN: let the exact step decide
        ex = np.flatnonzero(exact)
        size = size_c.copy()
        if ex.size:
            eidx = None if ex.size == na else xp.asarray(ex, device=dev)

            def sub(a: Array, eidx: Array | None = eidx) -> Array:
                return a if eidx is None else xp.take(a, eidx, axis=0)

            mf, gf = sub(mu), sub(ga)
            w = 1.0 - mf
            w *= mf
            if masked:
                w *= sub(rows(observed))
            wg = w * gf
            cc = unpack_symmetric(xp, w @ setup.qq, k)
            cg = wg @ q
            gg = xp.vecdot(wg, gf)
            if missing is not None:
                qf = sub(q_m)
                w_m = xp.take_along_axis(w, sub(clipped), axis=1) * sub(valid)
                cc = cc - xp.matrix_transpose(qf * w_m[:, :, None]) @ qf
            top = xp.concat([cc, cg[:, :, None]], axis=2)
            bottom = xp.concat([cg, gg[:, None]], axis=1)[:, None, :]
            info = xp.concat([top, bottom], axis=1)
            rhs = xp.concat(
                [sub(score)[:, :, None], xp.broadcast_to(e_last, (ex.size, k + 1, 1))], axis=2
            )
            sol = solve(xp, info, rhs)
            step_e = sol[:, :, 0]
            if eidx is None:
                step = step_e
            else:
                step[eidx, :] = step_e
            size[ex] = _host(
                xp.max(xp.abs(step_e), axis=1) / (1.0 + xp.abs(sub(bet) + step_e[:, k]))
            )
            v = sol[:, k, 1]
            if idx is None and eidx is None:
                var = v
            else:
                var[xp.asarray(active[ex], device=dev)] = v
        gam, bet = gam + step[:, :k], bet + step[:, k]
        if idx is None:
            gamma, beta = gam, bet
        else:
            gamma[idx, :], beta[idx] = gam, bet
        done = np.zeros(na, dtype=bool)
        done[ex] = size[ex] < tol
        done |= ~_host(xp.isfinite(bet))
        converged[active[done]] = True
        newton[active[exact & ~done]] = True  # near the optimum: exact steps from here
        chord = ~exact
        slow = chord & (size_c > 0.25 * last[active])
        newton[active[slow]] = True
        last[active[chord]] = size_c[chord]
    finite = _host(xp.isfinite(beta) & xp.isfinite(var) & (var > 0))
    ok = converged & finite
    return {
        "beta": beta,
        "se": xp.sqrt(var),
        "obs": xp.sum(observed, axis=1),
        "converged": xp.asarray(ok, device=dev),
    }


def _host(a: Array) -> np.ndarray:
    """A (small, per-variant) array on the host as NumPy."""
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return np.asarray(a)
