import numpy as np
import torch
from torch.utils.data import DataLoader

from cvlab.config import ImageCfg, SynthSpec
from cvlab.data.charset import resolve_charset
from cvlab.data.fonts import family_group, find_fonts
from cvlab.data.loaders import StepSampler, collate
from cvlab.data.synth import SynthWords, word_list


def make(seed=0, **kw):
    return SynthWords(SynthSpec(seed=seed, size=64, **kw), resolve_charset("lower36"), ImageCfg())


def test_same_index_same_pixels_and_label():
    a, b = make(), make()
    for i in (0, 7, 63):
        ta, la = a[i]
        tb, lb = b[i]
        assert la == lb and torch.equal(ta, tb)


def test_same_pixels_across_dataloader_workers():
    ds = make()
    direct = collate([ds[i] for i in range(16)])
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)
    images = torch.cat([x for x, _ in loader])[:16]
    labels = [label for _, ls in loader for label in ls][:16]
    assert labels == direct[1]
    assert torch.equal(images, direct[0])


def test_seeds_give_different_splits():
    a, b = make(seed=0), make(seed=1)
    assert [a[i][1] for i in range(20)] != [b[i][1] for i in range(20)]


def test_shapes_range_and_labels_follow_the_spec():
    ds = make(min_len=3, max_len=10)
    for i in range(32):
        t, label = ds[i]
        assert t.shape == (1, 32, 100) and t.dtype == torch.float32
        assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0
        assert 3 <= len(label) <= 10 and set(label) <= set("0123456789abcdefghijklmnopqrstuvwxyz")


def test_mix_of_dictionary_words_and_random_strings():
    ds = make(dict_ratio=0.5)
    words = set(word_list())
    labels = [ds[i][1] for i in range(64)]
    from_dict = sum(label in words for label in labels)
    assert 16 <= from_dict <= 48  # both kinds present in a 50/50 mix


def test_at_least_three_font_families_without_download():
    fonts = find_fonts(resolve_charset("lower36"))
    families = {family_group(f) for f in fonts}
    assert {"Aileron", "DejaVu", "STIX", "Computer Modern"} <= families, families


def test_synth_reports_its_fonts():
    assert make().report.lines() == [
        "rendering with 16 fonts from 4 families (Aileron, Computer Modern, DejaVu, STIX)"]


def test_mixed_case_charset_renders_cased_words():
    ds = SynthWords(SynthSpec(size=200, dict_ratio=1.0), resolve_charset("alnum62"), ImageCfg())
    labels = [ds[i][1] for i in range(200)]
    assert any(label.isupper() for label in labels) and any(label.islower() for label in labels)


def test_rgb_and_keep_ratio_geometry():
    image = ImageCfg(height=32, width=160, channels=3, resize="keep_ratio")
    ds = SynthWords(SynthSpec(size=8), resolve_charset("lower36"), image)
    t, _ = ds[0]
    assert t.shape == (3, 32, 160)


def test_step_sampler_is_a_function_of_the_step():
    full = list(StepSampler(n=10, batch_size=4, seed=3, steps=6))
    resumed = list(StepSampler(n=10, batch_size=4, seed=3, steps=6, start=4))
    assert resumed == full[4:]
    flat = [i for b in full[:5] for i in b]  # 20 draws = two epochs, each a permutation of 0..9
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert np.any(np.array(flat[:10]) != np.array(flat[10:20]))
