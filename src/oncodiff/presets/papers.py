"""The paper registry: one frozen object per paper that oncodiff implements, the one place a paper's chain is declared.

A paper is its stages (preset names, in the order they run; each a YAML file beside this module), its synthetic
site and dimensionality, its headline metric, its citation and where oncodiff departs from it. `oncodiff
presets`, `benchmarks/presets.py`, `benchmarks/ablations.py`, the preset tests and the table of
docs/presets.md read it. Adding a paper is one `Paper` in ``PAPERS`` plus its YAML files (docs/presets.md,
"Adding a paper"); `tests/test_presets.py` checks that every stage's YAML exists, that its ``data.dims`` is the
paper's and that its ``training.init_from`` / ``training.anatomy_from`` name the run folders of the stages the
registry says it starts from.

Pure data: this module imports nothing of oncodiff's, so anything may read it.
"""

from __future__ import annotations

from dataclasses import dataclass

HEADLINES = {  # headline metric kind -> what it is; benchmarks/presets.py computes each kind
    "heads": "response balanced accuracy and survival c-index of heads on the denoiser's up-block features",
    "global_local": "PSNR and SSIM over the whole slice and inside the tumour (GTV)",
    "lesion_agreement": "in-lesion SSIM and the agreement map of several seeds inside the lesion",
    "match": "tumour size match: median predicted / true follow-up volume",
    "ssim": "whole-crop SSIM of the generated follow-up",
}
COHORTS = ("treated", "public")  # the paper's treated cohort, or an untreated pre-training cohort of its site


@dataclass(frozen=True)
class Citation:
    """Where the paper is published: ``identifier`` is a DOI (``10.x/y``) or an arXiv id (``arXiv:NNNN.NNNNN``),
    None where the paper has neither (then ``note`` says where it comes from)."""

    authors: str
    title: str
    year: int | None
    identifier: str | None = None
    note: str = ""

    @property
    def url(self) -> str | None:
        if self.identifier is None:
            return None
        if self.identifier.startswith("arXiv:"):
            return f"https://arxiv.org/abs/{self.identifier.removeprefix('arXiv:')}"
        return f"https://doi.org/{self.identifier}"

    def short(self) -> str:
        """``Bhattacharya et al. 2025, arXiv:2505.23675``."""
        year = f" {self.year}" if self.year else ""
        return f"{self.authors}{year}" + (f", {self.identifier}" if self.identifier else
                                          (f", {self.note}" if self.note else ""))


@dataclass(frozen=True)
class Stage:
    """One training run of a paper: ``preset`` (a YAML in oncodiff/presets) trained on the paper's ``cohort``
    into ``run`` (the folder docs/presets.md's commands write, relative to where they run; a later stage's
    ``training.init_from`` names it). ``init_from`` and ``anatomy_from`` are the presets of the stages whose
    runs this one starts from (the denoiser or ControlNet it loads; the contrastive encoders it controls with)."""

    preset: str
    run: str
    cohort: str = "treated"
    init_from: str | None = None
    anatomy_from: str | None = None

    def __post_init__(self):
        if self.cohort not in COHORTS:
            raise ValueError(f"stage {self.preset}: cohort must be one of {COHORTS}, got {self.cohort!r}")


@dataclass(frozen=True)
class Paper:
    """A paper as presets: ``stages`` in the order they run. Stages that start from no other stage and that no
    later stage starts from are alternatives (PULSAR's two methods); ``chains()`` gives each trainable chain."""

    key: str            # short name, the seed file's paper: "immunodiff"
    name: str           # as the docs write it: "ImmunoDiff"
    seed: str           # the paper's number in shared/seeds (000..004)
    citation: Citation
    site: str           # `oncodiff synth --site` of its synthetic cohort
    data: str           # modality and the data the presets cut from it
    dims: int           # the network's spatial dims (data.dims of every stage)
    stages: tuple[Stage, ...]
    training: str       # what the stages train, in order
    headline: str       # a key of HEADLINES: the paper's own figure
    departures: tuple[str, ...]

    def __post_init__(self):
        presets = [s.preset for s in self.stages]
        if len(set(presets)) != len(presets):
            raise ValueError(f"paper {self.key}: a preset is listed twice in {presets}")
        for i, stage in enumerate(self.stages):
            for earlier in (stage.init_from, stage.anatomy_from):
                if earlier is not None and earlier not in presets[:i]:
                    raise ValueError(f"paper {self.key}: stage {stage.preset} starts from {earlier!r}, which is "
                                     f"not an earlier stage of the paper ({', '.join(presets[:i]) or 'none'})")
        if self.headline not in HEADLINES:
            raise ValueError(f"paper {self.key}: headline {self.headline!r} is not one of {sorted(HEADLINES)}")

    @property
    def presets(self) -> tuple[str, ...]:
        return tuple(s.preset for s in self.stages)

    def stage(self, preset: str) -> Stage:
        for stage in self.stages:
            if stage.preset == preset:
                return stage
        raise KeyError(f"{preset!r} is not a stage of {self.key} ({', '.join(self.presets)})")

    def chains(self) -> dict[str, tuple[Stage, ...]]:
        """Each last stage (one no other stage starts from) -> the stages it needs, in the order they run."""
        needed = {s.init_from for s in self.stages} | {s.anatomy_from for s in self.stages}
        chains = {}
        for last in (s for s in self.stages if s.preset not in needed):
            names, todo = set(), [last.preset]
            while todo:
                stage = self.stage(todo.pop())
                names.add(stage.preset)
                todo += [p for p in (stage.init_from, stage.anatomy_from) if p is not None]
            chains[last.preset] = tuple(s for s in self.stages if s.preset in names)
        return chains


PAPERS: tuple[Paper, ...] = (
    Paper(
        key="immunodiff", name="ImmunoDiff", seed="000",
        citation=Citation("Bhattacharya et al.", "ImmunoDiff: A Diffusion Model for Immunotherapy Response "
                          "Prediction in Lung Cancer", 2025, "arXiv:2505.23675"),
        site="lung", data="lung CT, 3D crops", dims=3,
        stages=(Stage("immunodiff-encoders", "runs/id-encoders", "public"),
                Stage("immunodiff-ddpm", "runs/id-ddpm", "public"),
                Stage("immunodiff-controlnet", "runs/id-controlnet", "public", init_from="immunodiff-ddpm",
                      anatomy_from="immunodiff-encoders"),
                Stage("immunodiff", "runs/immunodiff", "treated", init_from="immunodiff-controlnet")),
        training="contrastive, diffusion, ControlNet, ControlNet + cbi-Adapter", headline="heads",
        departures=(
            "the pre-training DDPM sees the baseline scan (every oncodiff denoiser does), so it learns the untreated "
            "course as well as the CT appearance; the paper's is unconditional on public CTs",
            "the cbi-Adapter's c is added after the first convolution of the ControlNet and of the locked U-Net, "
            "and the pre scan is also concatenated (the paper: the ControlNet)",
            "identity path: drift target, x0-prediction (the paper: eps on the post CT)",
            "CPU sizes: crops 32 x 32 x 16 at 5 mm slices, AdamW lr 2e-4, batch 4 (the paper: 96 x 96 x 16 at "
            "0.5 mm, Adam 2.5e-5, batch 2)",
            "pre-training on an untreated synthetic cohort, not public TCIA CTs",
        )),
    Paper(
        key="gbm-ldm", name="Glioblastoma LDM", seed="001",
        citation=Citation("Leclercq et al.", "Pre to Post-Treatment Glioblastoma MRI Prediction using a "
                          "Latent Diffusion Model (DGM4MICCAI)", 2025, "10.1007/978-3-032-05472-2_18"),
        site="brain", data="brain MRI, 2D tumour slices", dims=2,
        stages=(Stage("gbm-ldm-autoencoder", "runs/gbm-autoencoder"),
                Stage("gbm-ldm", "runs/gbm-ldm", init_from="gbm-ldm-autoencoder")),
        training="VQ-VAEs, latent diffusion", headline="global_local",
        departures=(
            "identity path: the LDM generates the latent drift z_post - z_pre, decoded as a residual on the pre "
            "scan (the paper: eps on z_post)",
            "the predicted survival class comes from oncodiff's class prior (clinical variables and baseline "
            "tumour size), not a ResNet on the pre MRI",
            "CPU sizes: 64 x 64 crops around the tumour, AdamW lr 1e-4, batch 16 (the paper: 256 x 256 slices, "
            "lr 2e-6, batch 30, 200 epochs)",
        )),
    Paper(
        key="pulsar", name="PULSAR", seed="002",
        citation=Citation("Peng, Jiang, Timmerman", "Exploring Strategies for Personalized Radiation Therapy: "
                          "Part II, Predicting Tumor Drift Patterns with Diffusion Models", 2025, "arXiv:2506.17491"),
        site="brain", data="brain MRI, 2D lesion boxes", dims=2,
        stages=(Stage("pulsar-drift", "runs/pulsar"), Stage("pulsar-drift-method1", "runs/pulsar-m1")),
        training="diffusion from the noised pre scan (Method 2, Method 1)", headline="lesion_agreement",
        departures=(
            "identity path: drift target, x0-prediction in both methods (the paper: post and eps)",
            "the U-Net also sees the clean pre scan and its tumour mask, so the seeds spread less",
            "MONAI's time embedding in every ResBlock, not a 64-unit embedding at the bottleneck",
            "synthetic glioblastoma-like tumours (one lesion per patient) rather than metastases",
        )),
    Paper(
        key="nac", name="NAC prompt tuning", seed="003",
        citation=Citation("Kim et al.", "Simulating Post-Neoadjuvant Chemotherapy Breast Cancer MRI via Diffusion "
                          "Model with Prompt Tuning", 2025, "arXiv:2509.24185",
                          note="authors from the released code, github.com/jongdory/NAC_sim"),
        site="breast", data="breast DCE-MRI MIP, 2D", dims=2,
        stages=(Stage("nac-prompt-base", "runs/nac-base"),
                Stage("nac-prompt", "runs/nac", init_from="nac-prompt-base")),
        training="diffusion, ControlNet", headline="match",
        departures=(
            "no natural-image pre-training and no CLIP text encoder: the tokens go to cross-attention directly",
            "the token MLPs train in the base stage and stay frozen with the denoiser in the ControlNet stage",
            "identity path: drift target, x0-prediction (the paper: Stable Diffusion's eps on the follow-up)",
            "the denoiser also sees the pre scan concatenated",
        )),
    Paper(
        key="ispy", name="I-SPY DDPM", seed="004",
        citation=Citation("Sista, Pavudala", "Tumor Progression Dynamics - A Diffusion Model Approach", None,
                          note="a UMBC report without DOI, arXiv id or year"),
        site="breast", data="breast MRI, 2D slices", dims=2,
        stages=(Stage("ispy-ddpm", "runs/ispy"),),
        training="diffusion", headline="ssim",
        departures=(
            "the baseline scan is concatenated to the noisy follow-up: a conditional pre -> post DDPM, where the "
            "paper's denoised images without predicting follow-ups",
            "identity path: drift target, x0-prediction (the paper: eps)",
            "model.use_days tells the 3- and 12-week follow-ups apart (the paper had no time input)",
        )),
)


def paper(key: str) -> Paper:
    """The registered paper ``key`` (``immunodiff``, ``gbm-ldm``, ``pulsar``, ``nac``, ``ispy``)."""
    for p in PAPERS:
        if p.key == key:
            return p
    raise KeyError(f"no paper {key!r}; registered: {', '.join(p.key for p in PAPERS)}")


def paper_of(preset: str) -> Paper | None:
    """The paper whose stage ``preset`` is, or None (``demo``)."""
    return next((p for p in PAPERS if preset in p.presets), None)


def chains() -> dict[str, tuple[Paper, tuple[Stage, ...]]]:
    """Every trainable chain of every paper, by the name of its last preset."""
    return {last: (p, stages) for p in PAPERS for last, stages in p.chains().items()}


def markdown_table() -> str:
    """docs/presets.md's table of the papers (a test checks that the page holds exactly this)."""
    lines = ["| paper | presets (in the order they run) | site, data | training stages | citation |",
             "|---|---|---|---|---|"]
    for p in PAPERS:
        presets = ", ".join(f"`{s}`" for s in p.presets)
        cite = p.citation
        where = f"[{cite.identifier}]({cite.url})" if cite.identifier else cite.note
        year = f" {cite.year}" if cite.year else ""
        lines.append(f"| {p.name} ({p.seed}) | {presets} | {p.data} | {p.training} | {cite.authors}{year}, {where} |")
    return "\n".join(lines) + "\n"
