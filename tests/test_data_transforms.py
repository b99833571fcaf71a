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
