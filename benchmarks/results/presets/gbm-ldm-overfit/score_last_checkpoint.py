# Run from the repository root: python benchmarks/results/presets/gbm-ldm-overfit/score_last_checkpoint.py OUT NAME
# LAST SPLIT (written as `import presets as P` beside benchmarks/; benchmarks is now a package).
import sys, time
from pathlib import Path
import numpy as np, torch
import benchmarks.presets as P
from oncodiff.pipeline.export import load_export
from oncodiff.pipeline.predict import predict_cases
out = Path(sys.argv[1]); name = sys.argv[2]; last = sys.argv[3]; split = sys.argv[4]
args = P.parser().parse_args(["--out", str(out), "--chains", name])
bench = P.Bench(out, args)
run = out / "runs" / last
cohort = bench.cohort(P.CHAINS[name].site)
model = load_export(run)
cases = P.split_cases(model, run, cohort, split, 24, bench.cache)
post, tumor = cases.batch["post"][:, 0].numpy(), cases.batch["tumor_mask"][:, 0].numpy() > 0
config = model.config.with_overrides(["sampling.guidance_scale=1"])
def score(tag):
    p = predict_cases(model, cases, 2, 0, "predicted", config)
    print(tag, "MAE", P.tumor_mae(p.mean, post, tumor).mean(), "post=pre", P.tumor_mae(cases.batch["pre_raw"][:, 0].numpy(), post, tumor).mean(), flush=True)
score("best")
sd = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
model.net.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("net.")})
score("last")
