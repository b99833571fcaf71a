"""data/transforms.py: paired augmentations."""

import pytest
import torch


def test_horizontal_flips_only_mirror_left_right():
    from oncodiff.data.transforms import augment, paired_augmentation

    image = torch.arange(16.0).reshape(1, 4, 4)
    keys = ("pre",)
    seen = {tuple(augment(paired_augmentation("horizontal", False, keys), {"pre": image}, seed, keys)["pre"]
                  .flatten().tolist()) for seed in range(20)}
    assert seen == {tuple(image.flatten().tolist()), tuple(image.flip(1).flatten().tolist())}
    with pytest.raises(ValueError):
        paired_augmentation("vertical", False)


def test_paired_intensity_curves_every_scan_alike_and_leaves_the_masks():
    from oncodiff.data.transforms import PairedIntensity, augment, paired_augmentation

    keys = ("pre", "post", "tumor_mask", "priors")
    pre = torch.rand(1, 24, 20)
    pre[0, :3] = 0.0
    priors = torch.stack([pre[0] * 0.5, torch.zeros_like(pre[0])])  # one earlier scan, one empty slot
    sample = {"pre": pre, "post": pre.clone(), "tumor_mask": (pre > 0.6).float(), "priors": priors}
    transform = paired_augmentation(False, False, keys, intensity=True)
    curve = transform.transforms[-1]
    assert isinstance(curve, PairedIntensity) and set(curve.keys) == {"pre", "post", "priors"}
    gammas = set()
    for seed in range(12):
        moved = augment(transform, sample, seed, keys)
        field = curve.field((24, 20)).float()
        assert torch.allclose(moved["pre"], pre.pow(curve.gamma) * field, atol=1e-6)  # the drawn curve and field
        assert torch.equal(moved["pre"], moved["post"])  # the same draw on every scan of the sample
        assert torch.allclose(moved["priors"][0], (0.5 * pre[0]).pow(curve.gamma) * field, atol=1e-6)
        assert torch.equal(moved["priors"][1], priors[1]) and torch.equal(moved["pre"][0, :3], pre[0, :3])  # zeros stay
        assert torch.equal(moved["tumor_mask"], sample["tumor_mask"])
        assert 1 / 1.5 <= curve.gamma <= 1.5 and float(field.min()) > 0.5 and float(field.max()) < 2.0
        assert not torch.allclose(field, torch.ones_like(field))  # a bias field, not a constant gain
        assert torch.equal(augment(transform, sample, seed, keys)["pre"], moved["pre"])  # same seed, same result
        gammas.add(round(curve.gamma, 6))
    assert len(gammas) == 12
    assert paired_augmentation(False, False, keys) is None  # off by default
    with pytest.raises(ValueError, match="gamma"):
        PairedIntensity(keys=["pre"], gamma=0.5)


def test_paired_intensity_works_on_3d_crops():
    from oncodiff.data.transforms import PairedIntensity

    curve = PairedIntensity(keys=["pre"])
    curve.set_random_state(1)
    image = torch.full((1, 6, 7, 5), 0.5)
    moved = curve({"pre": image})["pre"]
    assert moved.shape == image.shape and len(curve.coefficients) == 9  # degree <= 2 in three axes, no constant
    assert float(moved.std()) > 0  # the field varies over the crop
