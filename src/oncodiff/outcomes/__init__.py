"""oncodiff.outcomes: the outcome models (response, survival, the class prior), their one cross-validation engine,
their one standardisation, and how they are scored. Below pipeline and evaluation (docs/design.md).

    folds.py             make_folds: stratified folds grouped by patient, the one cross-validation engine
    scaling.py           Standardisation: the one z-scoring of features with a training part's statistics
    cross_validation.py  metrics and the one loop that scores every model in cross-validation
    networks.py          the torch networks: response and Cox heads, the scan CNN, the Cox partial likelihood
    heads.py             the feature-based heads (ImmunoDiff Stage 2) and the clinical linear baselines
    cnn.py               the from-scratch scan CNN baselines
    survival_curves.py   Kaplan-Meier curves by predicted risk group
    class_prior.py       p(class | clinical variables, baseline size) for predictions that do not know the outcome
    survival_risk.py     predict's Cox survival risk on the class prior's inputs

Import from the modules: this package's ``__init__`` imports nothing, so ``predict`` (which needs only the class
prior) does not load lifelines' and the CNN's code.
"""
