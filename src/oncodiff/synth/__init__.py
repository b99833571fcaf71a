"""Synthetic longitudinal cohorts with ground truth and counterfactuals (``oncodiff synth``).

For each patient of a site (brain, lung, breast) the generative model is, in order:

1. Clinical variables x ~ the site's population (age, sex, NLR, PD-L1, HR, HER2, KPS, MGMT).
2. Response class R ~ Bernoulli(sigmoid(b0 + beta . x)): a logistic model with a documented
   coefficient table per site; b0 is calibrated to the published response rate.
3. A per-patient random effect u ~ N(0, 0.15^2) on the log treatment sensitivity.
4. Anatomy: the MNI152 template (brain), an analytic CT chest phantom (lung) or a DCE-MRI breast
   volume (breast), with random pose, size, texture and anatomy masks.
5. Baseline tumour: a lobulated seed grown by Fisher-KPP reaction-diffusion for a few weeks
   (growth.py), so its shape follows the tissue (white matter, lung, fibroglandular tissue).
6. Follow-ups: the same equation from day 0 with the treatment's kill (treatment.py: LQ
   radiotherapy, immunotherapy, chemotherapy) at sensitivity s(R, x) * exp(u), once for R
   (factual) and once for 1 - R (counterfactual), from the same baseline.
7. Scans (render.py): tumour appearance (enhancing rim, necrotic core, halo), mass-effect drift of
   the surrounding tissue, per-patient bias field, independent noise per scan, shared by a scan and
   its counterfactual.
8. Outcomes: the response label by the site's rule (RECIST-like diameter, volume ratio, pCR) and
   a Weibull survival time whose hazard depends on x, tumour burden and the response, censored.

So a follow-up is a deterministic function of (baseline, x, days, R, u) plus scanner noise.
Equations and coefficient tables: the site modules and docs/synthetic-cohorts.md; calibration
against the papers: ``python -m oncodiff.synth.calibrate``.
"""

from oncodiff.synth.writer import synthesize

__all__ = ["synthesize"]
