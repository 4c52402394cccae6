"""Task ranking from implicit feedback: BPR and sampled-logistic kernels and RankingLearner.

Every training row is an event "this context chose this item" (a positive; with a target
column only rows whose target is in `target.positive`). A row's entries split by feature group:
the item side (`ranking.item` and `ranking.item_features`) and the context (everything else).
A negative replaces the item side by that of a sampled item of the `ItemCatalogue`
(`learners.negatives`). Per positive event, in stream order:

1. the positive is scored (returned by `learn`), and its negatives drawn and scored (the
   progressive `sampled_auc` / `sampled_hit`), all before any update;
2. per negative, one step (BPR: on −ln σ(ŷ(pos) − ŷ(neg)); logistic: the positive with y = 1
   once, then each negative with y = 0), the context's sums computed once per pair with the
   shared row scorer (`scoring.score_row`) and the item parts separately;
3. the item enters the catalogue (its first event's item-side entries) and its count grows; the
   user's recent-positive ring takes it.

BPR's gradient, with d = ŷ(c + p) − ŷ(c + n), g = ∂(−ln σ(d))/∂d = −σ(−d), per-factor sums
s_c, s_p, s_n of the parts: a context feature j (value x) steps v_jf along
g·x·(s_p,f − s_n,f) (its w and w0 cancel out, and are not touched); an item-side feature with
values x_p in the positive and x_n in the negative (0 when absent) steps w_j along
g·(x_p − x_n) and v_jf along g·(x_p(s_c + s_p)_f − x_n(s_c + s_n)_f − v_jf(x_p² − x_n²)); each
touched coordinate adds its group's L2 term reg·θ, as the SGD kernel. Steps use the SGD or
AdaGrad rule (`learners.steps`) at the rate of the event number t.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from streamfm.config import GroupRegularization, LearnerConfig, ModelConfig
from streamfm.csr import CSRChunk
from streamfm.learners import sampling, steps
from streamfm.learners.items import ItemCatalogue
from streamfm.learners.losses import sigmoid
from streamfm.learners.memory_hints import CASES_AHEAD, hint_read, hinted_cases
from streamfm.learners.negatives import (
    RecentPositives,
    event_key,
    fenwick_add,
    fenwick_build,
    fenwick_total,
    kept_or_drawn,
    negatives_key,
    ring_add,
    uniform_candidate,
)
from streamfm.learners.params import FMParams
from streamfm.learners.scoring import score_row
from streamfm.learners.sgd import SGDLearner, csr_top, divergence_error, unallocated_id_error


@njit(nogil=True, inline="always", error_model="numpy")
def _combine(pc, sqc, sc, pi, sqi, si):
    """Score of context + item parts from their score_row results."""
    inter = 0.0
    for f in range(sc.shape[0]):
        t = sc[f] + si[f]
        inter += t * t
    return pc + pi + 0.5 * (inter - sqc - sqi)


@njit(nogil=True, inline="always", error_model="numpy")
def _pointwise(
    idx, val, a, b, g, sc, si, w, V, acc_w, acc_V, reg_w, reg_v, group, lr, step_linear,
    step_factor,
):  # fmt: skip
    """A pointwise step (gradient g of the score) of the entries [a, b) of (idx, val), the row's
    per-factor sums being sc + si."""
    k = V.shape[1]
    for nz in range(a, b):
        j = np.uint32(idx[nz])
        x = val[nz]
        gi = group[j]
        wj = w[j]
        step_linear(w, acc_w, j, wj, g * x + reg_w[gi] * wj, lr)
        rv = reg_v[gi]
        gx = g * x
        gxx = gx * x
        for f in range(k):
            v = V[j, f]
            step_factor(V, acc_V, j, f, v, gx * (sc[f] + si[f]) - gxx * v + rv * v, lr)


@njit(nogil=True, inline="always", error_model="numpy")
def _add_item(cat, entries, ni, item_fid):
    """The catalogue takes a new item: its item-side entries, the first ni of entries = (pidx,
    pval). Returns its index. Arrays come in tuples, indexed at each use (`learners.negatives`)."""
    i = cat[0][0]  # cat: (sizes, fid, counts, indptr, indices, values, index_of)
    e0 = cat[0][1]
    cat[1][i] = item_fid
    cat[2][i] = 0
    for e in range(ni):
        cat[4][e0 + e] = entries[0][e]
        cat[5][e0 + e] = entries[1][e]
    cat[3][i + 1] = e0 + ni
    cat[0][0] = i + 1
    cat[0][1] = e0 + ni
    cat[6][item_fid] = i
    return i


# The kernels hint the memory of the event CASES_AHEAD later (`learners.memory_hints`): its w
# and V rows (and AdaGrad's sums of them) and, with the uniform sampler, those of each draw's
# first candidate (a positive's own item or a rejected one only wastes the hint; popularity's
# Fenwick search is not run twice). The hints are written out in both kernels: as an inlined
# helper taking the arrays, they gave back a third to a half of their gain (side by side, k 8
# and 32).


@njit(cache=True, nogil=True)
def _learn_pending(cat, recent, pending):
    """What the kernels left in `pending` (int64 (n, 2): per event of the pass, the user
    whose ring takes the item or -1, the item counted or -1), in event order: the counts and
    rings end as if written at once."""
    for e in range(pending.shape[0]):
        item = pending[e, 1]
        if item < 0:
            continue
        cat[2][item] += 1
        user_fid = pending[e, 0]
        if user_fid >= 0:
            ring_add(recent, user_fid, recent[1][user_fid], item)


@njit(nogil=True, inline="always", error_model="numpy")
def _rank_pass(
    rows, y, order, params, state, regs, rate, groups, cat, sampler, recent, scratch, out,
    stats, pairwise, step_linear, step_factor,
):  # fmt: skip
    """One pass over the rows `order` of a chunk (see the module docstring). Returns -1, or the
    position in `order` of the first row whose score or gradient was not finite."""
    indptr, indices, values = rows
    w0, w, V = params
    acc_w0, acc_w, acc_V = state
    reg0, reg_w, reg_v, group = regs
    lr0, decay, power_t, t0 = rate
    is_item, item_group, user_group = groups
    sizes, _fid, _counts, c_indptr, c_indices, c_values, index_of = cat
    key, n_neg, n_cand, popularity, exclude, max_tries, bit = sampler
    slot_of, rings = recent[1], recent[3]  # the rest: ring_add and _learn_pending
    cidx, cval, pidx, pval, didx, dxp, dxn, negs, zero, pending = scratch
    draws = (bit, rings)  # the tuples of the per-event helpers (learners.negatives)
    entries = (pidx, pval)
    row_auc, row_has = stats
    k = V.shape[1]
    n_params = w.shape[0]
    top, any_id = csr_top(rows)
    if any_id and top >= n_params:
        raise IndexError("ranking kernel: a feature id is negative or beyond the parameters")
    limit = np.uint32(n_params)
    sc = np.zeros(k)
    qc = np.zeros(k)
    sp = np.zeros(k)
    qp = np.zeros(k)
    sn = np.zeros(k)
    qn = np.zeros(k)
    n_draws = n_neg * n_cand
    with_acc = acc_V.shape[0] == V.shape[0]  # AdaGrad's sums (SGD's are empty)
    hinted = hinted_cases(V, order.shape[0])
    # The uniform sampler's first candidates of an event, drawn for the hints CASES_AHEAD
    # events before, and kept for the event (as in _mf_pass; 1.03-1.17x the pairs/s).
    ring = CASES_AHEAD + 1
    pre_cand = np.empty((ring, max(n_draws, 1)), np.int64)
    pre_event = np.full(ring, -1, np.int64)  # the event (position in order) of each ring row
    pre_items = np.zeros(ring, np.int64)  # the catalogue size they were drawn from
    for ii in range(order.shape[0]):
        ahead = ii + CASES_AHEAD  # --- memory hints for a later event (see above)
        if ahead < hinted:
            ra = order[ahead]
            for nz in range(indptr[ra], indptr[ra + 1]):
                hint_read(V, indices[nz])
                hint_read(w, indices[nz])
                if with_acc:
                    hint_read(acc_V, indices[nz])
                    hint_read(acc_w, indices[nz])
            n_items = sizes[0]
            if not popularity and n_items > 0:
                akey = event_key(key, t0 + ahead)
                pr = ahead % ring
                pre_event[pr] = ahead
                pre_items[pr] = n_items
                for m in range(n_draws):
                    cand = uniform_candidate(sampling.slot_key(akey, m), 0, n_items)
                    pre_cand[pr, m] = cand
                    for e in range(c_indptr[cand], c_indptr[cand + 1]):
                        hint_read(V, c_indices[e])
                        hint_read(w, c_indices[e])
                        if with_acc:
                            hint_read(acc_V, c_indices[e])
                            hint_read(acc_w, c_indices[e])
        r = order[ii]
        event = t0 + ii
        # --- split the row: context entries, item-side entries
        nc = 0
        ni = 0
        item_fid = -1
        user_fid = -1
        for nz in range(indptr[r], indptr[r + 1]):
            j = indices[nz]
            gj = group[j]
            if is_item[gj]:
                pidx[ni] = j
                pval[ni] = values[nz]
                ni += 1
                if gj == item_group and item_fid < 0:
                    item_fid = j
            else:
                cidx[nc] = j
                cval[nc] = values[nz]
                nc += 1
                if gj == user_group and user_fid < 0:
                    user_fid = j
        pc, _ic, sqc = score_row(0, nc, cidx, cval, w0, w, V, limit, sc, qc)
        pp, _ip, sqp = score_row(0, ni, pidx, pval, zero, w, V, limit, sp, qp)
        s_pos = _combine(pc, sqc, sc, pp, sqp, sp)
        out[r] = s_pos
        row_has[r] = False
        row_auc[r] = 0.0
        if not math.isfinite(s_pos):
            return ii
        if item_fid < 0:
            continue  # no item in the row: nothing to learn
        pos_item = index_of[item_fid]
        slot = slot_of[user_fid] if user_fid >= 0 else -1
        positive = y[r] > 0.0
        lr = steps.learning_rate(lr0, decay, power_t, event)
        if positive:
            n_items = sizes[0]
            total = fenwick_total(draws, n_items) if popularity else 0
            ekey = event_key(key, event)
            # --- draw and score the negatives before any update
            n_ok = 0
            below = 0.0
            pr = ii % ring
            drawn = not popularity and pre_event[pr] == ii and pre_items[pr] == n_items
            for m in range(n_neg):
                best = -1
                s_neg = 0.0
                for c in range(n_cand):  # adaptive: the highest scored of n_cand draws
                    kept = pre_cand[pr, m * n_cand + c] if drawn else -1
                    cand = kept_or_drawn(
                        kept, ekey, m * n_cand + c, n_items, pos_item, popularity, draws, total,
                        exclude, slot, max_tries,
                    )  # fmt: skip
                    if cand < 0:
                        continue
                    pn, _in, sqn = score_row(
                        c_indptr[cand], c_indptr[cand + 1], c_indices, c_values, zero, w, V,
                        limit, sn, qn,
                    )  # fmt: skip
                    s_c = _combine(pc, sqc, sc, pn, sqn, sn)
                    if best < 0 or s_c > s_neg:
                        best = cand
                        s_neg = s_c
                negs[m] = best
                if best < 0:
                    continue
                n_ok += 1
                if s_neg < s_pos:
                    below += 1.0
                elif s_neg == s_pos:
                    below += 0.5
            if n_ok:
                row_has[r] = True
                row_auc[r] = below / n_ok
            # --- the steps
            if not pairwise:
                # logistic: the positive (y = 1) first
                g = sigmoid(s_pos) - 1.0
                v0 = w0[0]
                step_linear(w0, acc_w0, 0, v0, g + reg0 * v0, lr)
                _pointwise(cidx, cval, 0, nc, g, sc, sp, w, V, acc_w, acc_V, reg_w, reg_v,
                           group, lr, step_linear, step_factor)  # fmt: skip
                _pointwise(pidx, pval, 0, ni, g, sc, sp, w, V, acc_w, acc_V, reg_w, reg_v,
                           group, lr, step_linear, step_factor)  # fmt: skip
            first = True
            for m in range(n_neg):
                cand = negs[m]
                if cand < 0:
                    continue
                if not (first and pairwise):  # parameters moved: the parts' sums again
                    pc, _ic, sqc = score_row(0, nc, cidx, cval, w0, w, V, limit, sc, qc)
                    if pairwise:
                        pp, _ip, sqp = score_row(0, ni, pidx, pval, zero, w, V, limit, sp, qp)
                first = False
                a = c_indptr[cand]
                b = c_indptr[cand + 1]
                pn, _in, sqn = score_row(a, b, c_indices, c_values, zero, w, V, limit, sn, qn)
                s_neg = _combine(pc, sqc, sc, pn, sqn, sn)
                if not pairwise:
                    g = sigmoid(s_neg)
                    if not math.isfinite(s_neg):
                        return ii
                    v0 = w0[0]
                    step_linear(w0, acc_w0, 0, v0, g + reg0 * v0, lr)
                    _pointwise(cidx, cval, 0, nc, g, sc, sn, w, V, acc_w, acc_V, reg_w, reg_v,
                               group, lr, step_linear, step_factor)  # fmt: skip
                    _pointwise(c_indices, c_values, a, b, g, sc, sn, w, V, acc_w, acc_V, reg_w,
                               reg_v, group, lr, step_linear, step_factor)  # fmt: skip
                    continue
                s_pos_now = _combine(pc, sqc, sc, pp, sqp, sp)
                d = s_pos_now - s_neg
                if not math.isfinite(d):
                    return ii
                g = -sigmoid(-d)
                # context features: only their factors move
                for e in range(nc):
                    j = np.uint32(cidx[e])
                    x = cval[e]
                    rv = reg_v[group[j]]
                    gx = g * x
                    for f in range(k):
                        v = V[j, f]
                        step_factor(V, acc_V, j, f, v, gx * (sp[f] - sn[f]) + rv * v, lr)
                # item-side features of the positive and of the negative, merged by id
                nd = 0
                for e in range(ni):
                    didx[nd] = pidx[e]
                    dxp[nd] = pval[e]
                    dxn[nd] = 0.0
                    nd += 1
                for e in range(a, b):
                    j = c_indices[e]
                    found = -1
                    for q in range(ni):
                        if didx[q] == j:
                            found = q
                            break
                    if found >= 0:
                        dxn[found] += c_values[e]
                    else:
                        didx[nd] = j
                        dxp[nd] = 0.0
                        dxn[nd] = c_values[e]
                        nd += 1
                for e in range(nd):
                    j = np.uint32(didx[e])
                    xp = dxp[e]
                    xn = dxn[e]
                    gi = group[j]
                    wj = w[j]
                    step_linear(w, acc_w, j, wj, g * (xp - xn) + reg_w[gi] * wj, lr)
                    rv = reg_v[gi]
                    dsq = xp * xp - xn * xn
                    for f in range(k):
                        v = V[j, f]
                        gr = g * (xp * (sc[f] + sp[f]) - xn * (sc[f] + sn[f]) - v * dsq)
                        step_factor(V, acc_V, j, f, v, gr + rv * v, lr)
        # --- step 3: the catalogue, the tree of popularity draws and (with exclude_seen, whose
        # draws read them) the user's ring learn the event now; the item's count and the ring
        # otherwise after the pass (row ii of `pending`, `_learn_pending`), as no draw of the
        # pass reads them. Stores to scattered places here hold the pass up, and so does an
        # inlined helper run for every event (a helper for this block cost a third of the
        # events/s at k 8), so the common case is written out in the kernel.
        if pos_item < 0:
            pos_item = _add_item(cat, entries, ni, item_fid)
        if positive:
            pending[ii, 1] = pos_item
            if popularity:
                fenwick_add(draws, pos_item, 1)
            if user_fid >= 0:
                if exclude:
                    ring_add(recent, user_fid, slot, pos_item)
                else:
                    pending[ii, 0] = user_fid
    return -1


@njit(nogil=True, inline="always", error_model="numpy")
def _mf_pass(
    rows, y, order, params, state, regs, rate, groups, cat, sampler, recent, scratch, out,
    stats, step_linear, step_factor,
):  # fmt: skip
    """`_rank_pass` with loss BPR for the MF layout (`mf_layout`): every row holds one context
    and one item entry, every catalogue item one entry, all of value 1. The same operations in
    the same order, bit for bit (tests/test_ranking_mf.py), with the per-factor loops of the
    three rows fused and no split or merge buffers (1.25-1.45x the pairs/s of the CSR kernel,
    benchmarks/bench_bpr.py)."""
    indptr, indices, values = rows
    w0, w, V = params
    acc_w0, acc_w, acc_V = state
    reg0, reg_w, reg_v, group = regs
    lr0, decay, power_t, t0 = rate
    is_item, item_group, user_group = groups
    sizes, _fid, _counts, c_indptr, c_indices, _values, index_of = cat
    key, n_neg, n_cand, popularity, exclude, max_tries, bit = sampler
    slot_of, rings = recent[1], recent[3]  # the rest: ring_add and _learn_pending
    cidx, cval, pidx, pval, didx, dxp, dxn, negs, zero, pending = scratch
    draws = (bit, rings)  # the tuples of the per-event helpers (learners.negatives)
    entries = (pidx, pval)
    row_auc, row_has = stats
    k = V.shape[1]
    n_params = w.shape[0]
    top, any_id = csr_top(rows)
    if any_id and top >= n_params:
        raise IndexError("ranking kernel: a feature id is negative or beyond the parameters")
    # Every catalogue item has one entry (mf_layout), so item c's is c_indices[first_entry + c]:
    # one random load per candidate instead of two dependent ones (c_indptr, then c_indices),
    # on which the hints of a candidate drawn ahead waited (1.03-1.07x the pairs/s, k 8 and 32,
    # 1 and 4 negatives; side by side).
    first_entry = c_indptr[0]
    one = np.float32(1.0)  # every x: products by it are exact, as in the CSR kernel
    sc = np.zeros(k)
    sp = np.zeros(k)
    s_negs = np.zeros(max(n_neg, 1))  # the scores of the negatives chosen
    n_draws = n_neg * n_cand
    with_acc = acc_V.shape[0] == V.shape[0]  # AdaGrad's sums (SGD's are empty)
    hinted = hinted_cases(V, order.shape[0])
    # The uniform sampler's first candidates of an event (and their feature ids), drawn when
    # its memory is hinted CASES_AHEAD events before: the event takes them from this ring
    # instead of drawing them again, unless the catalogue grew in between (the same draws,
    # bit for bit; 1.05-1.4x the pairs/s, old and new kernel side by side).
    ring = CASES_AHEAD + 1
    pre_cand = np.empty((ring, max(n_draws, 1)), np.int64)
    pre_jn = np.empty((ring, max(n_draws, 1)), np.int64)
    pre_event = np.full(ring, -1, np.int64)  # the event (position in order) of each ring row
    pre_items = np.zeros(ring, np.int64)  # the catalogue size they were drawn from
    for ii in range(order.shape[0]):
        ahead = ii + CASES_AHEAD  # --- memory hints for a later event, as in _rank_pass
        if ahead < hinted:
            ea = indptr[order[ahead]]
            ja = np.uint32(indices[ea])
            jb = np.uint32(indices[ea + 1])
            hint_read(V, ja)
            hint_read(V, jb)
            hint_read(w, ja)
            hint_read(w, jb)
            if with_acc:
                hint_read(acc_V, ja)
                hint_read(acc_V, jb)
                hint_read(acc_w, ja)
                hint_read(acc_w, jb)
            n_items = sizes[0]
            if not popularity and n_items > 0:
                akey = event_key(key, t0 + ahead)
                pr = ahead % ring
                pre_event[pr] = ahead
                pre_items[pr] = n_items
                for m in range(n_draws):
                    cand = uniform_candidate(sampling.slot_key(akey, m), 0, n_items)
                    jn = np.uint32(c_indices[first_entry + cand])
                    pre_cand[pr, m] = cand
                    pre_jn[pr, m] = jn
                    hint_read(V, jn)
                    hint_read(w, jn)
                    if with_acc:
                        hint_read(acc_V, jn)
                        hint_read(acc_w, jn)
        r = order[ii]
        event = t0 + ii
        e0 = indptr[r]
        u = np.uint32(indices[e0])
        i = np.uint32(indices[e0 + 1])
        if is_item[group[u]]:
            u, i = i, u
        pidx[0] = i
        pval[0] = one
        item_fid = np.int64(i) if group[i] == item_group else -1
        user_fid = np.int64(u) if group[u] == user_group else -1
        # the context and positive parts (score_row of one entry each) and their score
        pc = float(w0[0])
        pc += w[u] * one
        pp = float(zero[0])
        pp += w[i] * one
        sqc = 0.0
        sqp = 0.0
        inter = 0.0
        for f in range(k):
            dc = V[u, f] * one
            dp = V[i, f] * one
            sc[f] = 0.0 + dc
            sp[f] = 0.0 + dp
            sqc += 0.0 + dc * dc
            sqp += 0.0 + dp * dp
            t = sc[f] + sp[f]
            inter += t * t
        s_pos = pc + pp + 0.5 * (inter - sqc - sqp)
        out[r] = s_pos
        row_has[r] = False
        row_auc[r] = 0.0
        if not math.isfinite(s_pos):
            return ii
        if item_fid < 0:
            continue
        pos_item = index_of[item_fid]
        slot = slot_of[user_fid] if user_fid >= 0 else -1
        positive = y[r] > 0.0
        lr = steps.learning_rate(lr0, decay, power_t, event)
        if positive:
            n_items = sizes[0]
            total = fenwick_total(draws, n_items) if popularity else 0
            ekey = event_key(key, event)
            n_ok = 0
            below = 0.0
            pr = ii % ring
            drawn = not popularity and pre_event[pr] == ii and pre_items[pr] == n_items
            for m in range(n_neg):
                best = -1
                s_neg = 0.0
                for c in range(n_cand):
                    dm = m * n_cand + c
                    kept = pre_cand[pr, dm] if drawn else -1
                    cand = kept_or_drawn(
                        kept, ekey, dm, n_items, pos_item, popularity, draws, total, exclude,
                        slot, max_tries,
                    )  # fmt: skip
                    if cand < 0:
                        continue
                    if cand == kept:
                        jn = np.uint32(pre_jn[pr, dm])
                    else:
                        jn = np.uint32(c_indices[first_entry + cand])
                    pn = float(zero[0])
                    pn += w[jn] * one
                    sqn = 0.0
                    inter = 0.0
                    for f in range(k):
                        dn = V[jn, f] * one
                        sqn += 0.0 + dn * dn
                        t = sc[f] + (0.0 + dn)
                        inter += t * t
                    s_c = pc + pn + 0.5 * (inter - sqc - sqn)
                    if best < 0 or s_c > s_neg:
                        best = cand
                        s_neg = s_c
                negs[m] = best
                s_negs[m] = s_neg
                if best < 0:
                    continue
                n_ok += 1
                if s_neg < s_pos:
                    below += 1.0
                elif s_neg == s_pos:
                    below += 0.5
            if n_ok:
                row_has[r] = True
                row_auc[r] = below / n_ok
            rv_u = reg_v[group[u]]
            gi_p = group[i]
            first = True
            for m in range(n_neg):
                cand = negs[m]
                if cand < 0:
                    continue
                jn = np.uint32(c_indices[first_entry + cand])
                if not first:  # parameters moved: the parts' sums again
                    pc = float(w0[0])
                    pc += w[u] * one
                    pp = float(zero[0])
                    pp += w[i] * one
                    sqc = 0.0
                    sqp = 0.0
                    for f in range(k):
                        dc = V[u, f] * one
                        dp = V[i, f] * one
                        sc[f] = 0.0 + dc
                        sp[f] = 0.0 + dp
                        sqc += 0.0 + dc * dc
                        sqp += 0.0 + dp * dp
                if first:  # nothing moved since the scoring: its sums, bit for bit
                    d = s_pos - s_negs[m]
                else:
                    pn = float(zero[0])
                    pn += w[jn] * one
                    sqn = 0.0
                    inter_p = 0.0
                    inter_n = 0.0
                    for f in range(k):
                        dn = V[jn, f] * one
                        sqn += 0.0 + dn * dn
                        t = sc[f] + (0.0 + dn)
                        inter_n += t * t
                        t = sc[f] + sp[f]
                        inter_p += t * t
                    s_neg = pc + pn + 0.5 * (inter_n - sqc - sqn)
                    d = pc + pp + 0.5 * (inter_p - sqc - sqp) - s_neg
                first = False
                if not math.isfinite(d):
                    return ii
                g = -sigmoid(-d)
                gx = g * one
                # the item-side steps as _rank_pass's merge: the positive (x_p 1, x_n 0), then
                # the negative (x_p 0, x_n 1)
                xp = 1.0
                xn = 0.0
                wj = w[i]
                step_linear(w, acc_w, i, wj, g * (xp - xn) + reg_w[gi_p] * wj, lr)
                gi_n = group[jn]
                wj = w[jn]
                step_linear(w, acc_w, jn, wj, g * (xn - xp) + reg_w[gi_n] * wj, lr)
                rv_p = reg_v[gi_p]
                rv_n = reg_v[gi_n]
                dsq_p = xp * xp - xn * xn
                dsq_n = xn * xn - xp * xp
                for f in range(k):
                    sn_f = 0.0 + V[jn, f] * one
                    v = V[u, f]
                    step_factor(V, acc_V, u, f, v, gx * (sp[f] - sn_f) + rv_u * v, lr)
                    v = V[i, f]
                    gr = g * (xp * (sc[f] + sp[f]) - xn * (sc[f] + sn_f) - v * dsq_p)
                    step_factor(V, acc_V, i, f, v, gr + rv_p * v, lr)
                    v = V[jn, f]
                    gr = g * (xn * (sc[f] + sp[f]) - xp * (sc[f] + sn_f) - v * dsq_n)
                    step_factor(V, acc_V, jn, f, v, gr + rv_n * v, lr)
        # --- step 3, as in _rank_pass (written out there and here: see there why)
        if pos_item < 0:
            pos_item = _add_item(cat, entries, 1, item_fid)
        if positive:
            pending[ii, 1] = pos_item
            if popularity:
                fenwick_add(draws, pos_item, 1)
            if user_fid >= 0:
                if exclude:
                    ring_add(recent, user_fid, slot, pos_item)
                else:
                    pending[ii, 0] = user_fid
    return -1


@njit(cache=True, nogil=True, error_model="numpy")
def sgd_bpr(rows, y, order, params, state, regs, rate, groups, cat, sampler, recent, scratch, out, stats):  # fmt: skip
    return _rank_pass(rows, y, order, params, state, regs, rate, groups, cat, sampler, recent,
                      scratch, out, stats, True, steps.sgd_linear, steps.sgd_factor)  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad_bpr(rows, y, order, params, state, regs, rate, groups, cat, sampler, recent, scratch, out, stats):  # fmt: skip
    return _rank_pass(rows, y, order, params, state, regs, rate, groups, cat, sampler, recent,
                      scratch, out, stats, True, steps.adagrad_linear, steps.adagrad_factor)  # fmt: skip


@njit(nogil=True, inline="always")
def _fixed_sampler(sampler, popularity, exclude):
    """`sampler` with its popularity and exclude flags replaced by the constants given: a kernel
    compiled for one sampler has no code for the others' branches (see MF_KERNELS)."""
    key, n_neg, n_cand, _popularity, _exclude, max_tries, bit = sampler
    return (key, n_neg, n_cand, popularity, exclude, max_tries, bit)


@njit(cache=True, nogil=True, error_model="numpy")
def sgd_bpr_mf_uniform(rows, y, order, params, state, regs, rate, groups, cat, sampler, recent, scratch, out, stats):  # fmt: skip
    return _mf_pass(rows, y, order, params, state, regs, rate, groups, cat,
                    _fixed_sampler(sampler, False, False), recent, scratch, out, stats,
                    steps.sgd_linear, steps.sgd_factor)  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def sgd_bpr_mf_uniform_unseen(rows, y, order, params, state, regs, rate, groups, cat, sampler, recent, scratch, out, stats):  # fmt: skip
    return _mf_pass(rows, y, order, params, state, regs, rate, groups, cat,
                    _fixed_sampler(sampler, False, True), recent, scratch, out, stats,
                    steps.sgd_linear, steps.sgd_factor)  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def sgd_bpr_mf_popularity(rows, y, order, params, state, regs, rate, groups, cat, sampler, recent, scratch, out, stats):  # fmt: skip
    return _mf_pass(rows, y, order, params, state, regs, rate, groups, cat,
                    _fixed_sampler(sampler, True, False), recent, scratch, out, stats,
                    steps.sgd_linear, steps.sgd_factor)  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def sgd_bpr_mf_popularity_unseen(rows, y, order, params, state, regs, rate, groups, cat, sampler, recent, scratch, out, stats):  # fmt: skip
    return _mf_pass(rows, y, order, params, state, regs, rate, groups, cat,
                    _fixed_sampler(sampler, True, True), recent, scratch, out, stats,
                    steps.sgd_linear, steps.sgd_factor)  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad_bpr_mf_uniform(rows, y, order, params, state, regs, rate, groups, cat, sampler, recent, scratch, out, stats):  # fmt: skip
    return _mf_pass(rows, y, order, params, state, regs, rate, groups, cat,
                    _fixed_sampler(sampler, False, False), recent, scratch, out, stats,
                    steps.adagrad_linear, steps.adagrad_factor)  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad_bpr_mf_uniform_unseen(rows, y, order, params, state, regs, rate, groups, cat, sampler, recent, scratch, out, stats):  # fmt: skip
    return _mf_pass(rows, y, order, params, state, regs, rate, groups, cat,
                    _fixed_sampler(sampler, False, True), recent, scratch, out, stats,
                    steps.adagrad_linear, steps.adagrad_factor)  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad_bpr_mf_popularity(rows, y, order, params, state, regs, rate, groups, cat, sampler, recent, scratch, out, stats):  # fmt: skip
    return _mf_pass(rows, y, order, params, state, regs, rate, groups, cat,
                    _fixed_sampler(sampler, True, False), recent, scratch, out, stats,
                    steps.adagrad_linear, steps.adagrad_factor)  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad_bpr_mf_popularity_unseen(rows, y, order, params, state, regs, rate, groups, cat, sampler, recent, scratch, out, stats):  # fmt: skip
    return _mf_pass(rows, y, order, params, state, regs, rate, groups, cat,
                    _fixed_sampler(sampler, True, True), recent, scratch, out, stats,
                    steps.adagrad_linear, steps.adagrad_factor)  # fmt: skip


@njit(cache=True, nogil=True)
def mf_layout(indptr, indices, values, group, is_item, n_params, c_indptr, c_values, n_items):
    """True when `_mf_pass` applies: every row has one context and one item-side entry (ids
    below n_params), every catalogue item one entry (so that item c's entry is number
    c_indptr[0] + c, as items added during the pass keep it), all values 1. One pass, no
    temporaries."""
    for r in range(indptr.shape[0] - 1):
        a = indptr[r]
        if indptr[r + 1] - a != 2:
            return False
        j0 = np.uint32(indices[a])
        j1 = np.uint32(indices[a + 1])
        if j0 >= n_params or j1 >= n_params or values[a] != 1.0 or values[a + 1] != 1.0:
            return False
        if is_item[group[j0]] == is_item[group[j1]]:
            return False
    for c in range(n_items):
        a = c_indptr[c]
        if c_indptr[c + 1] - a != 1 or c_values[a] != 1.0:
            return False
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def sgd_logistic_sampled(rows, y, order, params, state, regs, rate, groups, cat, sampler, recent, scratch, out, stats):  # fmt: skip
    return _rank_pass(rows, y, order, params, state, regs, rate, groups, cat, sampler, recent,
                      scratch, out, stats, False, steps.sgd_linear, steps.sgd_factor)  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy")
def adagrad_logistic_sampled(rows, y, order, params, state, regs, rate, groups, cat, sampler, recent, scratch, out, stats):  # fmt: skip
    return _rank_pass(rows, y, order, params, state, regs, rate, groups, cat, sampler, recent,
                      scratch, out, stats, False, steps.adagrad_linear, steps.adagrad_factor)  # fmt: skip


KERNELS = {
    ("sgd", "bpr"): sgd_bpr,
    ("adagrad", "bpr"): adagrad_bpr,
    ("sgd", "logistic"): sgd_logistic_sampled,
    ("adagrad", "logistic"): adagrad_logistic_sampled,
}
# The MF-layout kernels by (step rule, sampler, exclude_seen): each compiled for its sampler
# alone, as the branches of the others (their Fenwick tree, their recent-positive rings), even
# never taken, slowed the events of the plain uniform sampler: without them 1.0-1.35x the
# pairs/s (k 8, 1 and 4 negatives, side by side, bit for bit the same model). The general
# CSR kernels take the sampler at run time (one compilation for all).
MF_KERNELS = {
    ("sgd", "uniform", False): sgd_bpr_mf_uniform,
    ("sgd", "uniform", True): sgd_bpr_mf_uniform_unseen,
    ("sgd", "popularity", False): sgd_bpr_mf_popularity,
    ("sgd", "popularity", True): sgd_bpr_mf_popularity_unseen,
    ("adagrad", "uniform", False): adagrad_bpr_mf_uniform,
    ("adagrad", "uniform", True): adagrad_bpr_mf_uniform_unseen,
    ("adagrad", "popularity", False): adagrad_bpr_mf_popularity,
    ("adagrad", "popularity", True): adagrad_bpr_mf_popularity_unseen,
}


class RankingLearner(SGDLearner):
    """The ranking learner (the `Learner` protocol; learner.method sgd or adagrad as the step
    rule). `ranking`: {"config": RankingConfig, "item_group": int, "item_groups": [int],
    "user_group": int or None} (feature groups = builder indices).

    State that decides the next update: the parameters and the step rule's accumulators, the
    event counter `t` (learning-rate schedule and negative draws), the `catalogue` and the
    `recent` positives. `learn` returns the positives' raw scores before their update;
    `last_sampled` then holds (sampled AUC per row, whether the row had negatives).
    """

    methods = ("sgd", "adagrad")

    def __init__(
        self,
        model: ModelConfig,
        learner: LearnerConfig,
        task: str = "ranking",
        group_regularization: dict[int, GroupRegularization] | None = None,
        params: FMParams | None = None,
        ranking: dict[str, Any] | None = None,
    ) -> None:
        if ranking is None:
            raise ValueError("RankingLearner needs the ranking set-up (item and user groups)")
        super().__init__(model, learner, "classification", group_regularization, params)
        self.task = "ranking"
        self.seed = int(model.seed)
        self.ranking_config = ranking["config"]
        self.item_group = int(ranking["item_group"])
        self.item_groups = sorted({self.item_group, *map(int, ranking["item_groups"])})
        user = ranking.get("user_group")
        self.user_group = -1 if user is None else int(user)
        self.catalogue = ItemCatalogue()
        self.recent = RecentPositives(self.ranking_config.negatives.recent)
        self._bit = np.zeros(1, dtype=np.int64)
        self._max_item_nnz = 0
        self.last_sampled: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0, bool))

    def _is_item(self, n_groups: int) -> np.ndarray:
        mask = np.zeros(max(n_groups, max(self.item_groups) + 1, 1), dtype=np.bool_)
        mask[self.item_groups] = True
        return mask

    def _fenwick(self) -> np.ndarray:
        """The popularity tree over the catalogue's counts, sized to its capacity."""
        cap = self.catalogue.arrays()[2].shape[0]
        if self._bit.shape[0] != cap + 1:
            self._bit = fenwick_build(self.catalogue.arrays()[2], self.catalogue.n_items, cap)
        return self._bit

    def learn(
        self,
        chunk: CSRChunk,
        y: np.ndarray,
        order: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """One pass over the chunk's events (see the module docstring); y > 0 marks positives
        (rows with y = 0 are seen by the catalogue only). Returns the raw scores of the rows'
        items before their update (float64, n_rows)."""
        if weights is not None:
            raise ValueError("task ranking takes no case weights")
        n = chunk.n_rows
        y = np.ascontiguousarray(y, dtype=np.float64)
        if order is None:
            order = np.arange(n, dtype=np.int64)
        reg_w, reg_v = self._group_regs()
        p, cfg, rc = self.params, self.config, self.ranking_config
        neg = rc.negatives
        nnz = np.diff(chunk.indptr)
        max_row = int(nnz.max(initial=0))
        self._max_item_nnz = max(self._max_item_nnz, max_row)
        cat, recent = self.catalogue, self.recent
        cat.reserve(p.n_features, n, int(chunk.indices.shape[0]))
        recent.reserve(p.n_features, n)
        popularity = neg.sampler == "popularity"
        # Only popularity draws read the tree: uniform ones neither build nor update it.
        bit = self._fenwick() if popularity else np.zeros(1, dtype=np.int64)
        zero = np.zeros(1, dtype=p.w0.dtype)
        pending = np.full((n, 2), -1, dtype=np.int64)  # step 3, after the pass
        width = max(max_row, 1)
        scratch = (
            np.zeros(width, np.int32),
            np.zeros(width, np.float32),
            np.zeros(width, np.int32),
            np.zeros(width, np.float32),
            np.zeros(width + self._max_item_nnz + 1, np.int32),
            np.zeros(width + self._max_item_nnz + 1, np.float64),
            np.zeros(width + self._max_item_nnz + 1, np.float64),
            np.zeros(neg.per_positive, np.int64),
            zero,
            pending,
        )
        top_group = int(p.group[: p.n_features].max(initial=0)) + 1
        decay = float(cfg.decay) if cfg.schedule == "invscaling" else 0.0
        rule = "adagrad" if p.adagrad else "sgd"
        is_item = self._is_item(top_group)
        mf = rc.loss == "bpr" and mf_layout(
            chunk.indptr, chunk.indices, chunk.values, p.group, is_item, p.n_features,
            cat.indptr, cat.values, cat.n_items,
        )  # fmt: skip
        kernel = (
            MF_KERNELS[(rule, neg.sampler, bool(neg.exclude_seen))]
            if mf
            else KERNELS[(rule, rc.loss)]
        )
        self.last_layout = "mf" if mf else "csr"
        out = np.empty(n, dtype=np.float64)
        row_auc = np.zeros(n, dtype=np.float64)
        row_has = np.zeros(n, dtype=np.bool_)
        try:
            bad = kernel(
                (chunk.indptr, chunk.indices, chunk.values),
                y,
                order,
                (p.w0, p.w[: p.n_features], p.V[: p.n_features]),
                (p.acc_w0, p.acc_w[: p.n_features], p.acc_V[: p.n_features]),
                (float(cfg.reg_bias), reg_w, reg_v, p.group),
                (float(cfg.learning_rate), decay, float(cfg.power_t), int(self.t)),
                (is_item, self.item_group, self.user_group),
                cat.arrays(),
                (
                    negatives_key(self.seed),
                    int(neg.per_positive),
                    int(neg.candidates),
                    popularity,
                    bool(neg.exclude_seen),
                    int(neg.max_tries),
                    bit,
                ),
                recent.arrays(),
                scratch,
                out,
                (row_auc, row_has),
            )
        except IndexError:
            raise unallocated_id_error(p.n_features) from None
        _learn_pending(cat.arrays(), recent.arrays(), pending)  # also after a divergence
        if bad >= 0:
            self.t += int(bad)
            raise divergence_error(
                self.t + 1,
                int(order[bad]) + 1,
                "a score",
                f"Try a smaller learner.learning_rate (now {cfg.learning_rate:g}) or AdaGrad.",
            )
        self.t += n
        self.last_sampled = (row_auc, row_has)
        return out

    def predict(self, chunk: CSRChunk) -> np.ndarray:
        """Raw FM scores of the rows (context + item as given)."""
        return self.decision_function(chunk)

    # --- state
    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["catalogue"] = self.catalogue.state_dict()
        out["recent"] = self.recent.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("task") != "ranking" or "catalogue" not in state:
            raise ValueError("the saved learner is not a ranking learner")
        super().load_state_dict(state)
        self.task = "ranking"
        self.catalogue.load_state_dict(state["catalogue"])
        self.recent.load_state_dict(state["recent"])
        self._bit = np.zeros(1, dtype=np.int64)
        cat = self.catalogue
        self._max_item_nnz = int(np.diff(cat.indptr).max(initial=0))
        top = cat.indices.max(initial=-1)
        if top >= self.params.n_features or cat.item_fid.max(initial=-1) >= self.params.n_features:
            raise ValueError("the catalogue names features beyond the parameters")
