"""Every class-prior candidate of a trained run: its grouped-CV log loss on the training split (the fold seed
``ClassPrior.select`` uses, and the mean over 10 fold seeds), its test log loss (diagnosis only: nothing here
feeds back into the choice), and the nested-CV gain of the whole selection over the base rate.

    python -m benchmarks.prior_candidates RUN COHORT
"""
import json, sys
import numpy as np
from oncodiff.models import CLASS_COUNTS, CLASS_LABEL_KEYS
from oncodiff.pipeline.cases import load_cases
from oncodiff.pipeline.export import load_export
from oncodiff.pipeline.prior_inputs import candidate_inputs
from oncodiff.outcomes import class_prior as cp
from oncodiff.outcomes.folds import make_folds
from oncodiff.outcomes.scaling import Standardisation

run, cohort = sys.argv[1], sys.argv[2]
model = load_export(run)
splits = json.load(open(f"{run}/splits.json"))
kind = model.config.model.class_label
ts = model.config.evaluation.feature_timestep
data = {}
for part in ("train", "test"):
    cases = load_cases(model, cohort, splits[part])
    data[part] = (candidate_inputs(model, cases, ts), cases.batch[CLASS_LABEL_KEYS[kind]].numpy().astype(int),
                  np.array([c.patient_id for c in cases.cases]))
K = CLASS_COUNTS[kind]
(xs, y, g), (xt, yt, gt) = data["train"], data["test"]
rate = np.bincount(y, minlength=K) / len(y)
print("train rows", len(y), "class counts", np.bincount(y), "patients", len(set(g)), "| test rows", len(yt), np.bincount(yt, minlength=K))
def std(a, b):
    scaling = Standardisation.fit(a)  # the class prior's: every column kept
    return scaling(a), scaling(b)
def test_loss(name, c, sh):
    if name == cp.BASE_RATE:
        p = np.tile(rate, (len(yt), 1))
    else:
        z, zt = std(xs[name], xt[name])
        coef, icpt = cp.fit_logistic(z, y, K, c, 0)
        lg = zt @ coef.T + icpt; lg -= lg.max(1, keepdims=True); p = np.exp(lg); p /= p.sum(1, keepdims=True)
        p = (1 - sh) * p + sh * rate
    return cp.negative_log_likelihood(p, yt).mean()
def cv_losses(splits_list):
    rates = np.zeros((len(y), K))
    for tr, te in splits_list:
        rates[te] = np.bincount(y[tr], minlength=K) / len(tr)
    out = {(cp.BASE_RATE, 0.0, 1.0): cp.negative_log_likelihood(rates, y)}
    for name in cp.INPUTS:
        z, _ = std(xs[name], xs[name])
        for c in cp.C_GRID:
            p = cp.out_of_fold_probabilities(z, y, K, splits_list, c, 0)
            for sh in cp.SHRINKAGE_GRID:
                out[(name, c, sh)] = cp.negative_log_likelihood((1 - sh) * p + sh * rates, y)
    return out
sel = cp.ClassPrior.select({k: v for k, v in xs.items()}, y, K, 0, g, ts)
print("selected by the code:", sel.describe(), "test loss", round(test_loss(sel.inputs, sel.c, sel.shrinkage), 3))
folds = cp.grouped_folds(y, g, 0)[1]
rep = {}
for r in range(10):
    sp = make_folds(y, g, folds, r)
    for k, v in cv_losses(sp).items():
        rep.setdefault(k, []).append(v)
rows = []
for k, v in rep.items():
    v = np.array(v)  # (repeats, rows)
    rows.append((k, v[0].mean(), v.mean(), v.mean(1).std(), test_loss(*k)))
rows.sort(key=lambda r: r[2])
print("candidate | CV loss (seed 0) | CV loss 10x repeated | sd over repeats | TEST loss")
for k, a, b, s, t in rows[:12] + [r for r in rows if r[0][0] == cp.BASE_RATE]:
    print(k, f"{a:.3f} {b:.3f} {s:.3f} {t:.3f}")
print("test loss of the best 10 by repeated CV:", [round(r[4], 3) for r in rows[:10]])
# nested CV: the selection procedure's out-of-fold loss vs base rate's, outer = grouped 3-fold, 5 repeats
gains = []
for r in range(5):
    outer = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=100 + r).split(y, y, g)
    for tr, te in outer:
        sub = cp.ClassPrior.select({k: v[tr] for k, v in xs.items()}, y[tr], K, 0, g[tr], ts)
        if sub is None: continue
        feats = xs.get(sub.inputs, xs[cp.CLINICAL])[te]
        p = sub.probabilities(feats); pb = np.tile(np.bincount(y[tr], minlength=K) / len(tr), (len(te), 1))
        gains.append((cp.negative_log_likelihood(pb, y[te]).mean() - cp.negative_log_likelihood(p, y[te]).mean(), sub.inputs, sub.shrinkage))
print("nested CV: base-rate loss minus selected-prior loss per outer fold (positive = prior better):")
print([(round(a, 3), b[:8], s) for a, b, s in gains], "mean", round(np.mean([a for a, _, _ in gains]), 3))
