"""One validated, frozen experiment configuration.

A config is built from a preset YAML (``oncodiff/presets/NAME.yaml`` or any path) plus
``--set section.key=value`` overrides, validated by pydantic with unknown keys forbidden, and
written into the run folder before anything runs. Options are enums (``Literal``) checked at
construction; a typo in a key is an error that names the key and the closest valid ones.
"""

from __future__ import annotations

import difflib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from oncodiff.errors import ConfigError


# Gaussian sigmas (mm) that preprocessing smooths every pre and post scan with, for data.smoothing and the
# denoised baseline of `oncodiff evaluate`; 0 = unsmoothed.
SMOOTHING_MM = (0.0, 1.0, 1.5, 2.0, 3.0)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Preprocessing, splits and augmentation."""

    dims: Literal[2, 3] = Field(2, description="spatial dimensions of the training samples")
    spacing: tuple[float, ...] | None = Field(
        None, description="target voxel spacing in mm (one value per axis); null keeps the native spacing"
    )
    crop: Literal["fixed", "bbox"] = Field(
        "fixed",
        description="fixed: a crop of crop_size voxels centred on the baseline tumour; "
        "bbox: the tumour bounding box plus margin, rescaled to crop_size (PULSAR)",
    )
    crop_size: tuple[int, ...] = Field((64, 64), description="crop size in voxels, one value per axis")
    crop_margin: float = Field(0.25, ge=0.0, description="bbox crop: margin as a fraction of the box size")
    slices: Literal["none", "tumor", "largest", "mip"] = Field(
        "none",
        description="3D scans to 2D: none keeps 3D; tumor: every slice holding tumour; largest: the slice "
        "with most tumour; mip: maximum intensity projection along the last axis",
    )
    min_tumor_voxels: int = Field(1, ge=0, description="tumor slices: minimum tumour voxels for a slice to count")
    slice_margin: int = Field(
        0, ge=0, description="tumor slices: also this many slices above and below the tumour, so that growth into "
        "neighbouring slices is predicted too"
    )
    train_slice_margin: int | None = Field(
        None, ge=0, description="tumor slices: train (and take the validation loss) only on the slices at most this "
        "many slices beyond the tumour's; prediction, calibration and evaluation still take every slice that "
        "slice_margin cuts. None: train on every cut slice"
    )
    smoothing: Literal["none", "auto"] | float = Field(
        "none",
        description="Gaussian denoising of the pre and post scans (sigma in mm) before cropping, for noisy "
        "acquisitions: the model then starts from the denoised baseline and learns the change, not the noise; "
        "auto: the sigma of SMOOTHING_MM (0 included) whose smoothed baseline best matches the follow-ups inside "
        "the tumour on the training split, as the denoised baseline of `oncodiff evaluate` chooses it",
    )
    normalization: Literal[
        "auto", "percentile", "zscore", "nonzero_zscore", "whitestripe", "tissue", "ct_window", "none"
    ] = Field(
        "auto", description="per-scan intensity normalisation. auto: ct_window for CT cohorts, percentile otherwise; "
        "nonzero_zscore: z-score of the foreground clipped to data.percentiles (TaDiff); whitestripe: the "
        "foreground's histogram mode (white matter on T1) and its +-5 % quantile stripe (WhiteStripe-like, "
        "unbounded); tissue: in [0, 1], air (the low percentile) at 0 and the foreground's median at 0.4, anchors "
        "a tumour's change hardly moves"
    )
    percentiles: tuple[float, float] = (0.5, 99.5)
    ct_window: tuple[float, float] = Field((-1000.0, 400.0), description="HU window (low, high) mapped to [0, 1]")
    registration: Literal["auto", "none", "rigid", "affine"] = Field(
        "auto", description="follow-up to baseline: auto measures the misalignment (a coarse rigid fit) and "
        "registers rigidly when it exceeds data.registration_threshold_mm; rigid, affine: always; none: never"
    )
    registration_threshold_mm: float = Field(
        1.0, ge=0.0, description="auto registration: register when the measured mean displacement exceeds this (mm)"
    )
    bias_correction: Literal["auto", "n4", "none"] = Field(
        "auto", description="N4 bias-field correction of every scan before normalisation: auto = n4 for MRI "
        "cohorts, none for CT (Hounsfield units carry no multiplicative bias)"
    )
    timepoints: tuple[str, ...] | None = Field(None, description="follow-up labels to train on; null = all")
    inputs: Literal["prior", "baseline"] = Field(
        "prior", description="prior: each target scan comes with every earlier scan of its lesion (interim scans, "
        "earlier follow-ups; the latest data.max_priors of them), registered to the baseline and cut on its crops, "
        "and with the baseline's other sequences (format 2); the denoiser gets them as extra image channels with "
        "presence flags and each prior's day, and the class prior the early change measured on the latest prior. "
        "baseline: the target from the baseline alone (format 1's behaviour). A cohort without earlier scans or "
        "sequences trains exactly the format-1 model either way")
    max_priors: int = Field(2, ge=0, le=8, description="K: at most this many earlier scans per target (the latest); "
                            "a fixed number, so that every sample has K prior slots with presence flags")
    flips: bool | Literal["horizontal"] = Field(
        True,
        description="random in-plane flips: true = both in-plane axes, horizontal = left-right only (axis 0; "
        "glioblastoma LDM), false = none",
    )
    rotations: bool = True
    intensity_augmentation: bool = Field(
        False,
        description="per training sample, one random contrast curve (x -> x^gamma, gamma log-uniform in "
        "[1/1.5, 1.5]) and one smooth bias field (about +-10 % across the crop), the same on the baseline, the "
        "follow-up and the earlier scans: the change stays the sample's own while the tissue's look varies "
        "(data/transforms.py PairedIntensity)",
    )
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    stratify: bool = Field(
        True, description="fraction splits: draw the test and validation patients within each response label, so "
        "every split keeps the cohort's label mix; false = one shuffle of all patients (the earlier splits)")
    folds: int | None = Field(None, ge=2, description="stratified k-fold on the response label instead of fractions")
    fold: int = Field(0, ge=0, description="which fold is the test fold when folds is set")
    num_workers: int = Field(0, ge=0)
    cache_dir: str | None = Field(None, description="preprocessing cache; default ~/.cache/oncodiff")
    preprocess_workers: int | None = Field(
        None, ge=1, description="lesions preprocessed in parallel processes (joblib); null = the cores available to "
        "this process. The cache is byte-identical for any number (each lesion runs single-threaded)")
    scheduler: str | None = Field(
        None, description="a Dask scheduler address (tcp://host:8786): preprocess on that cluster through joblib's "
        "Dask backend instead of local processes; needs `pip install oncodiff[cluster]` and the cohort and oncodiff "
        "reachable by every worker at the same paths")

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("data.val_fraction + data.test_fraction must be below 1")
        out_dims = 2 if self.slices != "none" else self.dims
        if self.slices != "none" and self.dims != 2:
            raise ValueError("data.slices turns 3D scans into 2D samples; set data.dims=2 with it")
        if len(self.crop_size) != out_dims:
            raise ValueError(f"data.crop_size has {len(self.crop_size)} values; data.dims={out_dims} needs {out_dims}")
        if self.spacing is not None and len(self.spacing) not in (2, 3):
            raise ValueError("data.spacing needs 2 or 3 values (mm per axis)")
        if not isinstance(self.smoothing, str) and self.smoothing not in SMOOTHING_MM:
            raise ValueError(f"data.smoothing={self.smoothing}: choose none, auto or a sigma in mm from "
                             f"{', '.join(f'{s:g}' for s in SMOOTHING_MM)}")
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"data.fold={self.fold} must be below data.folds={self.folds}")
        if self.rotations and self.crop_size[0] != self.crop_size[1]:
            raise ValueError(
                f"data.rotations turns crops by 90 degrees in-plane, which needs a square in-plane crop; "
                f"data.crop_size={list(self.crop_size)}: make the first two values equal or set data.rotations=false"
            )
        return self


class AutoencoderConfig(_Section):
    """Autoencoders for latent diffusion (model.latent): MONAI VQVAE or AutoencoderKL, 2D or 3D."""

    channels: tuple[int, ...] = Field(
        (32, 64, 64),
        description="one width per resolution level; the latent grid is the crop halved len(channels) - 1 times",
    )
    latent_channels: int = Field(3, ge=1, description="channels of the latent (the VQ codebook vector size)")
    num_res_blocks: int = Field(1, ge=1, description="residual blocks (VQ: residual layers) per level")
    norm_num_groups: int = Field(16, ge=1, description="AutoencoderKL group norm; every channel count a multiple")
    codebook_size: int = Field(256, ge=2, description="VQ-VAE: codebook entries")
    commitment_cost: float = Field(0.25, ge=0.0, description="VQ-VAE: weight of the commitment loss")
    kl_weight: float = Field(1e-6, ge=0.0, description="AutoencoderKL: weight of the KL term (LDM: 1e-6)")
    adversarial_weight: float = Field(
        0.0, ge=0.0, description="weight of a MONAI PatchDiscriminator adversarial term; 0 = off"
    )
    mask_dice_weight: float = Field(
        1.0, ge=0.0, description="weight of a soft Dice term (1 - 2 sum(x_hat x) / (sum x_hat^2 + sum x^2)) added to "
        "the mask autoencoder's L1: with L1 alone, small tumours decode as empty masks; 0 = L1 only",
    )
    mask: Literal["autoencoder", "resize"] = Field(
        "autoencoder",
        description="tumour mask in latent space: autoencoder = its own autoencoder with the image latent's shape "
        "(glioblastoma LDM); resize = the mask area-averaged onto the latent grid",
    )
    checkpointing: bool = Field(False, description="activation checkpointing: less memory for 3D, slower steps")

    @field_validator("channels")
    @classmethod
    def _levels(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(c < 1 for c in v):
            raise ValueError("model.autoencoder.channels needs at least one positive width per level, e.g. [32, 64, 64]")
        return v


class AnatomyEncoderConfig(_Section):
    """ImmunoDiff's anatomy (vessel, lobe) encoders, pre-trained contrastively (training.stage=contrastive)."""

    width: int = Field(16, ge=1, description="channels of each anatomy structure's embedding map")
    depth: int = Field(3, ge=1, description="3x3 convolutions per encoder (all at full resolution)")
    projection_dim: int = Field(64, ge=1, description="output width of the projection head W2 ReLU W1")
    temperature: float = Field(0.5, gt=0.0, description="NT-Xent temperature (ImmunoDiff: 0.5)")
    positives: Literal["views", "anatomy"] = Field(
        "views",
        description="views: two augmentations of each structure of a case (SimCLR); anatomy: different structures "
        "of the same case, e.g. its vessels and its lobes (ImmunoDiff eq. 1; needs >= 2 anatomy masks)",
    )


class ModelConfig(_Section):
    """The denoiser and its conditioning."""

    channels: tuple[int, ...] = (32, 64, 64)
    attention_levels: tuple[bool, ...] = (False, False, True)
    num_res_blocks: int = Field(1, ge=1)
    num_head_channels: int = Field(32, ge=1)
    norm_num_groups: int = Field(16, ge=1)
    clinical: Literal["none", "tokens", "cbi"] = Field(
        "tokens", description="clinical conditioning: tokens into cross-attention, or the cbi-Adapter"
    )
    token_dim: int = Field(64, ge=8, description="width of clinical tokens and the cross-attention context")
    cbi_lambda: float = Field(0.05, description="ImmunoDiff: c = Z_img + lambda * sum_i Z_i")
    class_label: Literal["none", "response", "survival2", "survival4"] = Field(
        "response", description="class label with a trained null class for classifier-free guidance"
    )
    class_dropout: float = Field(0.15, ge=0.0, le=1.0, description="probability of dropping labels in training")
    clinical_dropout: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="probability of marking all clinical variables missing in training "
        "(trains the clinical-unconditional model for classifier-free guidance)",
    )
    use_days: bool = Field(True, description="condition on days since baseline (continuous embedding)")
    day_min_period: float = Field(
        0.0, ge=0.0, description="days embedding: leave out the Fourier features with a period shorter than this "
        "many days (0 = all, from 8 years down to 23 days). With a few scheduled follow-up days, short periods give "
        "each scheduled day its own code, and a day between or beyond them (another cohort's schedule) an "
        "arbitrary one; 365 keeps the embedding smooth over a year (measured across two synthetic families with "
        "different schedules: no gain; docs/results.md)",
    )
    prompt_tokens: bool = Field(
        False,
        description="NAC prompt tuning: the days (time point) and the class label enter as learned tokens of the "
        "cross-attention context (each through its own MLP), next to the clinical tokens, instead of being added "
        "to the timestep embedding",
    )
    use_anatomy: bool = Field(True, description="concatenate the cohort's anatomy masks as input channels")
    drift_head: Literal["none", "shared", "decoupled"] = "none"
    generate_mask: bool = Field(
        False, description="generate the follow-up tumour mask with the image, as a second target channel "
        "(needs follow-up masks in training); volumes then come from each sample's own mask, not the segmenter",
    )
    control: Literal["none", "pre", "anatomy"] = Field("none", description="ControlNet branch over a frozen denoiser")
    latent: Literal["none", "vqvae", "kl"] = Field("none", description="latent diffusion through an autoencoder")
    autoencoder: AutoencoderConfig = AutoencoderConfig()
    anatomy_encoder: AnatomyEncoderConfig = AnatomyEncoderConfig()
    control_embedding_width: int = Field(
        16, ge=1, description="ControlNet: channels of the first layer of its control embedding"
    )

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if len(self.attention_levels) != len(self.channels):
            raise ValueError(
                f"model.attention_levels has {len(self.attention_levels)} entries; "
                f"model.channels has {len(self.channels)}; give one per level"
            )
        if self.token_dim % 2:
            raise ValueError(f"model.token_dim={self.token_dim} must be even (rotary embeddings rotate pairs)")
        if self.prompt_tokens and self.clinical == "cbi":
            raise ValueError("model.prompt_tokens feeds tokens to cross-attention, which model.clinical=cbi has none "
                             "of: set model.clinical=tokens (NAC) or model.prompt_tokens=false")
        if self.generate_mask and self.latent != "none":
            raise ValueError("model.generate_mask adds a mask channel to a pixel-space target; a latent model "
                             "(model.latent) encodes its mask through model.autoencoder.mask instead: set "
                             "model.generate_mask=false")
        for c in self.channels:
            if c % self.norm_num_groups:
                raise ValueError(f"model.channels value {c} is not a multiple of model.norm_num_groups={self.norm_num_groups}")
        groups = self.autoencoder.norm_num_groups
        if self.latent == "kl" and any(c % groups for c in self.autoencoder.channels):
            raise ValueError(f"model.autoencoder.channels {list(self.autoencoder.channels)} must all be multiples of "
                             f"model.autoencoder.norm_num_groups={groups} for model.latent=kl")
        return self


class DiffusionConfig(_Section):
    """What the denoiser predicts and how noise is scheduled."""

    target: Literal["post", "drift"] = Field("drift", description="generate the post scan or the drift post - pre")
    prediction: Literal["eps", "v", "x0"] = Field("x0", description="network parameterisation")
    schedule: Literal["linear", "scaled_linear", "cosine", "pulsar"] = Field(
        "cosine",
        description="linear / scaled_linear betas from beta_start..beta_end; cosine (Nichol & Dhariwal); "
        "pulsar: alpha_bar = 1 - linspace(0.05, 0.95, T), the paper's T = 21",
    )
    num_train_timesteps: int = Field(1000, ge=2)
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    loss: Literal["mse", "l1"] = Field(
        "mse",
        description="the denoiser's error term: mse (every paper; the conditional mean) or l1 (the conditional "
        "median: where the outcome is bimodal and the inputs cannot tell the modes apart, the mean course is "
        "neither, and in-tumour MAE rewards the median)",
    )
    ssim_weight: float = Field(0.0, ge=0.0, le=1.0, description="loss = (1 - w) * error + w * (1 - SSIM); PULSAR: 0.1")
    drift_loss_weight: float = Field(1.0, ge=0.0, description="weight of the auxiliary drift head loss")
    tumor_loss_weight: float = Field(0.0, ge=0.0, description="extra loss weight inside the dilated tumour mask")
    min_snr_gamma: float | None = Field(
        None, gt=0.0, description="Min-SNR-gamma loss weighting (Hang et al. 2023; 5 is their choice); null = off"
    )
    noise_sampling: Literal["auto", "uniform", "lognormal"] = Field(
        "auto",
        description="how training draws each element's noise level: uniform = t ~ U{0..T-1} (DDPM); lognormal = "
        "EDM's (Karras et al. 2022, sec. 5): log sigma ~ N(lognormal_mean, lognormal_std^2) with sigma = "
        "sqrt((1 - alpha_bar) / alpha_bar), taken to the train timestep of nearest log sigma; auto = lognormal on "
        "the default route for 3D cohorts (data/route.py; measured across synthetic families), uniform otherwise",
    )
    lognormal_mean: float = Field(-1.2, description="diffusion.noise_sampling=lognormal: mean of log sigma (EDM: -1.2)")
    lognormal_std: float = Field(1.2, gt=0.0, description="diffusion.noise_sampling=lognormal: std of log sigma (EDM: 1.2)")
    source: Literal["noise", "pre"] = Field(
        "noise",
        description="what the forward process noises: noise = the target (x_T ~ N(0, I) at sampling); pre = the "
        "pre-treatment scan, so x_T is the noised pre scan and the network learns to move it to the follow-up "
        "(PULSAR; for diffusion.target=drift the pre scan is a zero drift)",
    )
    max_noise_level: float | None = Field(
        None, gt=0.0, lt=1.0,
        description="keep only the timesteps whose noise level 1 - alpha_bar is at most this; training and "
        "sampling stop there (PULSAR: 0.2, the '20 % noise' of x_T); null = the whole schedule",
    )
    residual: Literal["none", "regression", "mechanistic"] = Field(
        "none",
        description="regression: CorrDiff's residual design (Mardani et al.): a regression U-Net (the run's own, "
        "trained first into RUN/residual_mean/ on diffusion.residual_share of the budget, then frozen) predicts the "
        "mean follow-up from the inputs without the class, and the diffusion model generates the residual (the "
        "target minus that mean), conditioned on the mean as an extra image channel and on the class; sampling "
        "adds the mean back, and the export carries both networks. mechanistic: the mean is the mechanistic forecast "
        "(data/mechanistic.py: Fisher-KPP growth with a log-kill from the baseline tumour mask), its parameters fitted "
        "on the training split when training starts (one set with the outcome unknown, one per class) and stored in "
        "the export; a sample conditioned on class k gets class k's forecast, the null class the outcome-unknown one. "
        "none: the diffusion model generates the target",
    )
    residual_share: float = Field(
        0.5, gt=0.0, lt=1.0,
        description="diffusion.residual=regression: the share of training.max_minutes (or training.max_steps) "
        "given to the regression U-Net; the diffusion model gets the rest",
    )


class SamplingConfig(_Section):
    """How predictions are drawn."""

    sampler: Literal["ddpm", "ddim", "dpmpp", "single_step"] = "ddim"
    steps: int = Field(20, ge=1)
    eta: float = Field(0.0, ge=0.0)
    guidance_scale: float = Field(1.0, description="classifier-free guidance; 1 = conditional, 0 = unconditional")
    clip_x0: float | None = Field(
        None, gt=0.0, description="clamp the predicted x0 to [-clip_x0, clip_x0] at every step; null = no clamp"
    )
    samples: int = Field(8, ge=1)
    batch_size: int = Field(
        32, ge=1, description="network inputs per forward pass (samples x cases, chunked); the default is where the "
        "demo U-Net's time per crop stopped falling on a 2-core CPU (benchmarks/README.md, forward-pass "
        "variants); raise it on a GPU",
    )
    agreement_threshold: float = Field(
        0.05, ge=0.0,
        description="agreement map (PULSAR: several seeds per case): a sample's drift below this magnitude "
        "(normalised intensity) counts as 'no change'; the map is the share of samples in the most common of "
        "decrease / no change / increase",
    )
    unknown_class: Literal["mixture", "most_probable"] = Field(
        "mixture",
        description="how a class-conditioned model (model.class_label) samples when the outcome is unknown (predict "
        "without --set response=...): mixture = each case's samples split between the classes in proportion to the "
        "class prior p(class | clinical, baseline size), so the mean is the expected follow-up and the samples show "
        "both outcomes; most_probable = every sample under the prior's most probable class (the glioblastoma LDM's "
        "'predicted class'): one sharp outcome, which is wrong whenever the prior is (benchmarks/results/quality)",
    )
    calibrate: bool = Field(
        True,
        description="at the end of training, sample the validation split as predict does and fit conformal margins "
        "for the volume-change intervals (oncodiff.pipeline.calibration); predict reports the calibrated intervals",
    )
    spread: Literal["calibrated", "raw"] = Field(
        "calibrated",
        description="calibrated = each sample's deviation from the mean of its case's samples of the same class is "
        "scaled by the factor fitted with the interval margins (sampling.calibrate) on the validation split, the "
        "one of least CRPS in the tumour box (oncodiff.pipeline.spread: the samples within a class are otherwise "
        "near copies); class means and the sample mean are unchanged; a model without a fitted factor samples raw. "
        "raw = the samples as drawn",
    )
    calibration_folds: int = Field(
        5, ge=0,
        description="when the validation split has fewer follow-ups than the widest calibrated level needs (9 for "
        "90 %), training also fits this many models, each without one patient-grouped fold of the training split "
        "and with 1/K of the run's step budget, and adds their out-of-fold predictions to the calibration "
        "(cross-conformal margins, oncodiff.pipeline.calibration); 0 or 1 = never (the 90 % interval stays "
        "uncalibrated on a small validation split)",
    )


PREDICTING_STAGES = ("diffusion", "regression", "latent_diffusion", "controlnet")  # stages that generate follow-ups


class TrainingConfig(_Section):
    """Optimisation and the Lightning Trainer."""

    stage: Literal["diffusion", "regression", "autoencoder", "contrastive", "latent_diffusion", "controlnet"] = Field(
        "diffusion",
        description="diffusion / regression: the pixel-space denoiser; autoencoder: the image (and mask) autoencoders "
        "of model.latent; contrastive: the anatomy encoders (NT-Xent); latent_diffusion: the denoiser in the latent "
        "space of init_from's autoencoders; controlnet: a ControlNet over init_from's frozen denoiser",
    )
    max_epochs: int = Field(200, ge=1)
    max_minutes: float | None = Field(5.0, gt=0, description="wall-clock budget; null = no limit")
    batch_size: int = Field(16, ge=1)
    samples_per_epoch: int | None = Field(
        512, ge=1, description="training samples drawn per epoch (several passes over small cohorts); null = one pass"
    )
    max_steps: int | None = Field(
        None, ge=1, description="optimiser steps; null = as many as max_minutes allows (measured at start)"
    )
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(50, ge=0)
    ema_decay: float = Field(0.999, ge=0.0, lt=1.0)
    patience: int = Field(10, ge=1, description="early stopping on validation loss (I-SPY: 10)")
    precision: Literal["bf16-mixed", "16-mixed", "32"] = Field(
        "bf16-mixed", description="16-mixed (fp16, I-SPY) runs as bf16-mixed on CPU, which has no fp16 autocast; "
        "both run as 32 on a CPU without native bf16 (AVX-512 or AMX), where emulated bf16 is several times slower"
    )
    seed: int = 0
    devices: int | str = "auto"
    num_nodes: int = Field(1, ge=1)
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    val_every_n_epochs: int = Field(1, ge=1)
    init_from: str | None = Field(None, description="run folder of a pre-trained stage to start from")
    freeze: tuple[str, ...] = Field((), description="parameter-name prefixes to freeze")
    anatomy_from: str | None = Field(
        None, description="run folder of a contrastive stage whose anatomy encoders make the ControlNet's control"
    )

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_number(cls, value):
        return "32" if value == 32 and not isinstance(value, bool) else value  # --set training.precision=32


class EvaluationConfig(_Section):
    """Evaluation protocol."""

    bbox_margin: int = Field(4, ge=0, description="voxels added around the tumour bounding box")
    response_threshold: float = Field(
        -0.20, description="relative volume change at or below which a case is a responder (PULSAR: -20 %)"
    )
    feature_timestep: int = Field(100, ge=0, description="noise level for up-block features (ImmunoDiff stage 2)")
    folds: int = Field(5, ge=2)
    data_range: float = Field(
        1.0, gt=0, description="intensity span for PSNR and SSIM; preprocessing normalises images to about [0, 1]"
    )
    mmd_bandwidth: float | None = Field(
        None, gt=0, description="RBF kernel bandwidth for MMD; null = median pairwise distance (median heuristic)"
    )
    fid_weights: str | None = Field(
        None, description="TorchScript feature extractor for FID: (B, 1, *S) images in [0, 1] -> (B, D) features"
    )
    lpips_weights: str | None = Field(
        None, description="TorchScript LPIPS network: (pred, target), each (B, 1, *S) in [0, 1] -> (B,) distances"
    )
    segmenter_steps: int = Field(
        1500, ge=1, description="training steps of the follow-up tumour segmenter used for size change (NAC paper)"
    )
    coverage_levels: tuple[float, ...] = Field(
        (0.5, 0.9), description="nominal levels of the central sample intervals checked for coverage, and calibrated "
        "at the end of training (sampling.calibrate)"
    )

    baselines: tuple[Literal["regression", "regression_drift", "no_clinical"], ...] = Field(
        ("regression", "regression_drift", "no_clinical"),
        description="trained baselines to compare with (identity and the denoised identity always); each is trained once into RUN/baselines/",
    )
    baseline_minutes: float | None = Field(
        None, gt=0, description="training budget of each baseline; null = the run's own training.max_minutes"
    )
    mechanistic: bool = Field(
        True, description="also score the mechanistic forecast (no network: Fisher-KPP growth with log-kill run "
        "forward from the baseline tumour mask, anatomy masks as diffusivity where the cohort names white/grey "
        "matter or brain; D, rho, kill and contrast fitted on the training split, seconds to a few minutes), with "
        "the outcome unknown and, where the training pairs carry classes, given the true class "
        "(data/mechanistic.py)",
    )
    head_epochs: int = Field(200, ge=1, description="full-batch AdamW steps of the response and Cox heads per fold")
    cnn_epochs: int = Field(10, ge=1, description="epochs of the from-scratch scan CNN baseline per fold")

    @field_validator("coverage_levels")
    @classmethod
    def _levels(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(not 0.0 < level < 1.0 for level in v):
            raise ValueError("evaluation.coverage_levels must be fractions strictly between 0 and 1, e.g. [0.5, 0.9]")
        return v


class Config(_Section):
    """The whole experiment."""

    preset: str = "custom"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    sampling: SamplingConfig = SamplingConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()

    @field_validator("preset")
    @classmethod
    def _name(cls, v: str) -> str:
        return v.strip() or "custom"

    @model_validator(mode="after")
    def _stage_needs(self) -> Config:
        stage, model, training = self.training.stage, self.model, self.training
        latent_stages = ("autoencoder", "latent_diffusion")
        if stage in latent_stages and model.latent == "none":
            raise ValueError(f"training.stage={stage} needs an autoencoder kind: set model.latent=vqvae or kl")
        if stage in ("diffusion", "regression") and model.latent != "none":
            raise ValueError(f"model.latent={model.latent} diffuses in latent space: use training.stage=latent_diffusion "
                             f"(after training.stage=autoencoder), or set model.latent=none")
        if stage == "controlnet" and model.control == "none":
            raise ValueError("training.stage=controlnet needs model.control=pre or anatomy")
        if stage in ("latent_diffusion", "controlnet") and training.init_from is None:
            needed = "an autoencoder (or latent_diffusion) run" if stage == "latent_diffusion" else "a diffusion run"
            raise ValueError(f"training.stage={stage} starts from {needed}: set training.init_from (--init-from RUN)")
        if model.latent != "none" and model.drift_head != "none" and stage in ("latent_diffusion", "controlnet"):
            raise ValueError("model.drift_head predicts an image-space drift map; latent diffusion has none: "
                             "set model.drift_head=none")
        residual = self.diffusion.residual
        if residual != "none" and stage == "diffusion":
            if self.diffusion.source != "noise":
                raise ValueError(f"diffusion.residual={residual} generates the residual from noise: set "
                                 "diffusion.source=noise (the pre scan is no starting point for a residual)")
        if residual != "none" and stage in ("latent_diffusion", "controlnet"):
            raise ValueError(f"diffusion.residual={residual} is a pixel-space design of training.stage=diffusion; "
                             f"training.stage={stage} cannot use it: set diffusion.residual=none")
        if training.accelerator == "cpu" and (problem := bf16_conv3d_problem(self)):
            from oncodiff.precision import runs_as  # torch: only for a config the check would refuse

            if runs_as(training.precision, "cpu") != "32":  # a CPU without native bf16 trains it in fp32
                raise ValueError(problem)
        return self

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_json(cls, path: str | Path) -> Config:
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> Config:
        """A copy with ``section.key=value`` overrides applied and validated."""
        raw = self.model_dump(mode="json")
        items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides]
        for key, value in items:
            _set_dotted(raw, key, value)
        return _validate(raw, source="--set overrides")


def first_axis_sizes(config: Config) -> set[int]:
    """Sizes along the first spatial axis of the inputs of the stage's 3D convolutions (U-Net levels, and the
    autoencoder's levels and the latent grid's U-Net levels for latent diffusion)."""
    size = config.data.crop_size[0]
    model = config.model
    unet_levels = len(model.channels)
    if config.training.stage == "contrastive":
        return {size}
    if model.latent == "none" or config.training.stage in ("diffusion", "regression"):
        return {size // 2**k for k in range(unet_levels)}
    autoencoder_levels = len(model.autoencoder.channels)
    sizes = {size // 2**k for k in range(autoencoder_levels)}
    if config.training.stage != "autoencoder":
        latent = size // 2 ** (autoencoder_levels - 1)
        sizes |= {latent // 2**k for k in range(unet_levels)}
    return sizes


def bf16_conv3d_problem(config: Config) -> str | None:
    """Why this config must not train in bf16 on CPU, or None.

    torch's CPU bf16 conv3d computes wrong weight gradients (inf/nan, or errors near 100 %) when the
    convolution's input has size 2 on its FIRST spatial axis (measured with torch 2.13 for 16 -> 16, 4 -> 16
    and 16 -> 4 channels; sizes 1 and >= 3, and size 2 on the other axes, are fine). The check ignores the
    channel counts: a 3D network that halves data.crop_size[0] down to 2 at some level is refused.
    """
    precision = config.training.precision
    if config.data.dims != 3 or config.data.slices != "none" or precision == "32":
        return None
    if 2 not in first_axis_sizes(config):
        return None
    return (f"data.crop_size={list(config.data.crop_size)} is halved to 2 voxels on its first axis inside the network "
            f"(model.channels has {len(config.model.channels)} levels"
            + (f", model.autoencoder.channels {len(config.model.autoencoder.channels)}" if config.model.latent != "none"
               else "")
            + f"), and torch's CPU {precision.replace('-mixed', '')} 3D convolutions compute wrong weight gradients "
            "for inputs of size 2 on the first axis: make data.crop_size[0] larger (or the network shallower), "
            "or set training.precision=32")


def preset_names() -> list[str]:
    """Names of the presets that ship with oncodiff."""
    return sorted(p.name[:-5] for p in resources.files("oncodiff.presets").iterdir() if p.name.endswith(".yaml"))


def preset_path(name_or_path: str) -> Path:
    """Resolve a preset name (``demo``) or a YAML path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"preset file {p} does not exist")
        return p
    candidate = Path(str(resources.files("oncodiff.presets").joinpath(f"{name_or_path}.yaml")))
    if not candidate.is_file():
        close = difflib.get_close_matches(name_or_path, preset_names(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown preset {name_or_path!r}{hint} Available: {', '.join(preset_names())}, or a .yaml path")
    return candidate


def load_config(preset: str = "demo", overrides: list[str] | None = None) -> Config:
    """Build the config from a preset YAML plus ``section.key=value`` overrides."""
    path = preset_path(preset)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a preset is a mapping of sections (data, model, ...), got {type(raw).__name__}")
    raw.setdefault("preset", path.stem)
    config = _validate(raw, source=str(path))
    return config.with_overrides(overrides or [])


def _split_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set training.max_minutes=2")
    key, _, value = item.partition("=")
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as error:
        problem = str(error).splitlines()[0]
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({problem}); quote a string, and close a "
                          "list, e.g. --set training.devices=[0,1]") from None


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = raw
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            options = list(node) if isinstance(node, dict) else []
            close = difflib.get_close_matches(part, options, n=3)
            where = ".".join(parts[:depth]) or "the config"
            hint = f" Did you mean {', '.join(close)}?" if close else f" Valid keys: {', '.join(options)}."
            raise ConfigError(f"--set {key}: {where} has no key {part!r}.{hint}")
        if depth == len(parts) - 1:
            node[part] = value
        else:
            node = node[part]


def _validate(raw: dict, source: str) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "config"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                section = _section_fields(err["loc"][:-1])
                close = difflib.get_close_matches(str(err["loc"][-1]), section, n=3)
                msg = "unknown key" + (f"; did you mean {', '.join(close)}?" if close else "")
            lines.append(f"  {loc}: {msg}")
        raise ConfigError(f"invalid configuration in {source}:\n" + "\n".join(lines)) from None


def _section_fields(loc: tuple) -> list[str]:
    model: Any = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return list(model.model_fields)
