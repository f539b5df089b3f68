import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cvlab.config import ImageCfg, SynthSpec
from cvlab.config.synth import STAGES
from cvlab.data.charset import resolve_charset
from cvlab.data.loaders import collate
from cvlab.data.sampling import StepSampler
from cvlab.data.synth import SynthWords, builtin_words, family_group, find_fonts, lexicon

LOWER36 = set("0123456789abcdefghijklmnopqrstuvwxyz")


def make(seed=0, charset="lower36", image=None, **kw):
    return SynthWords(SynthSpec(seed=seed, size=64, **kw), resolve_charset(charset), image or ImageCfg())


def only(stage: str | None = None, **kw):
    """Every stage off (style plain), dark text on a light ground, except `stage` at p=1."""
    cfg = {"style": "plain", "color": "dark_on_light", **kw}
    if stage:
        cfg[stage] = {"p": 1.0}
    return cfg


def gray(img) -> np.ndarray:
    return np.asarray(img.convert("L"), dtype=np.float32)


def test_same_index_same_pixels_and_label():
    a, b = make(), make()
    for i in (0, 7, 63):
        ta, la = a[i]
        tb, lb = b[i]
        assert la == lb and torch.equal(ta, tb)


def test_same_pixels_across_dataloader_workers_and_a_resumed_sampler():
    ds = make()
    direct = collate([ds[i] for i in range(16)])
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate)
    images = torch.cat([x for x, _ in loader])[:16]
    labels = [label for _, ls in loader for label in ls][:16]
    assert labels == direct[1]
    assert torch.equal(images, direct[0])
    # a resume reads step s's indices from the sampler, and index i is the same image in a fresh dataset
    full = list(StepSampler(n=64, batch_size=4, seed=3, steps=6))
    resumed = list(StepSampler(n=64, batch_size=4, seed=3, steps=6, start=4))
    assert resumed == full[4:]
    fresh = make()
    assert all(torch.equal(ds[i][0], fresh[i][0]) for i in resumed[0])


def test_seeds_give_different_splits():
    a, b = make(seed=0), make(seed=1)
    assert [a[i][1] for i in range(20)] != [b[i][1] for i in range(20)]


def test_shapes_range_and_labels_follow_the_spec():
    ds = make(min_len=3, max_len=10)
    for i in range(32):
        t, label = ds[i]
        assert t.shape == (1, 32, 100) and t.dtype == torch.float32
        assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0
        assert 3 <= len(label) <= 10 and set(label.lower()) <= LOWER36


def test_text_sources_in_their_proportions():
    ds = SynthWords(SynthSpec(size=400), resolve_charset("printable94"), ImageCfg())
    words = set(lexicon())
    labels = [ds.render(i)[1] for i in range(400)]
    from_lexicon = sum(label.lower() in words and label.isalpha() for label in labels)
    assert 0.6 * 400 <= from_lexicon <= 0.85 * 400  # 70 % lexicon (a few random strings are words too)
    assert any(any(c.isdigit() for c in label) and any(c.isalpha() for c in label) for label in labels)
    assert any("." in label for label in labels)  # mixed tokens such as tetley.co.uk


def test_lexicon_is_large_and_the_builtin_list_is_kept():
    assert len(lexicon()) >= 80_000 and all(w.isalpha() and w.isascii() for w in lexicon()[:1000])
    ds = make(words={"lexicon": 1, "random": 0, "digits": 0, "mixed": 0, "builtin_only": True})
    assert all(ds.render(i)[1].lower() in set(builtin_words()) for i in range(30))


def test_case_is_drawn_independently_of_the_word():
    ds = SynthWords(SynthSpec(size=300, words={"lexicon": 1, "random": 0, "digits": 0, "mixed": 0}),
                    resolve_charset("lower36"), ImageCfg())
    texts = [ds.render(i)[1] for i in range(300)]
    upper = sum(t.isupper() and len(t) > 1 for t in texts)
    title = sum(t[0].isupper() and t[1:].islower() for t in texts if len(t) > 1)
    lower = sum(t.islower() for t in texts)
    # lower36 has no capitals, yet about 35 % of the words are drawn in capitals and 30 % capitalised
    assert upper > 60 and title > 50 and lower > 50
    only_upper = make(case={"lower": 0, "upper": 1, "title": 0, "random": 0},
                      words={"lexicon": 1, "random": 0, "digits": 0, "mixed": 0})
    assert all(only_upper.render(i)[1].isupper() for i in range(20))


def test_labels_keep_only_what_the_charset_encodes():
    ds = make(words={"lexicon": 0, "random": 0, "digits": 0, "mixed": 1}, min_len=1, max_len=30)
    labels = [ds.render(i)[1] for i in range(60)]
    assert all(set(label.lower()) <= LOWER36 for label in labels)  # 'tetley.co.uk' is labelled 'tetleycouk'
    digits = make(charset="digits", min_len=1, max_len=20)
    assert all(ds_label.isdigit() for ds_label in (digits.render(i)[1] for i in range(30)))


def test_a_shadow_darkens_pixels_beside_the_strokes():
    plain, shadow = make(**only()), make(**only("shadow", shadow={"p": 1.0, "blur": (0, 0)}))
    darker_beside = 0
    for i in range(12):
        a, b = gray(plain.render(i)[0]), gray(shadow.render(i)[0])
        diff = b - a
        assert diff.max() <= 1.0  # a shadow never lightens anything
        ink = a < 128
        beside = (diff < -20) & ~ink
        darker_beside += int(beside.any())
        if beside.any():  # every darkened pixel lies within the shadow's offset of a stroke
            ys, xs = np.nonzero(beside)
            iy, ix = np.nonzero(ink)
            reach = 0.12 * 2.5 * a.shape[0] + 2  # largest offset: 0.12 line heights (x-height-only ink: a line is ~2.5 crops)
            d = np.min(np.maximum(np.abs(ys[:, None] - iy[None]), np.abs(xs[:, None] - ix[None])), axis=1)
            assert d.max() <= reach
    assert darker_beside >= 10


def test_a_border_outlines_the_strokes():
    plain, border = make(**only()), make(**only("border"))
    changed = 0
    for i in range(8):
        a, b = gray(plain.render(i)[0]), gray(border.render(i)[0])
        ink = a < 100
        changed += int((np.abs(b - a)[~ink] > 30).any())
    assert changed >= 7


def test_a_tight_crop_has_ink_near_the_top_and_the_bottom():
    ds = make(**{**only(), "crop": {}})  # the default (tight) crop, every other stage off
    loose = make(**only())  # plain style: the old wide margins
    def ink_rows(d, i):
        g = gray(d.render(i)[0])
        rows = np.nonzero((g < 128).any(axis=1))[0]
        return rows[0] / g.shape[0], (g.shape[0] - 1 - rows[-1]) / g.shape[0]
    tight = np.array([ink_rows(ds, i) for i in range(30)])
    wide = np.array([ink_rows(loose, i) for i in range(30)])
    # margins are at most 12 % of the ink's height (plus a pixel of rounding; thin faces' faint dots and serifs
    # fall under the threshold, so a few crops read a little looser)
    assert np.median(tight) <= 0.07 and np.quantile(tight, 0.9) <= 0.16
    assert wide.mean() > tight.mean() + 0.04


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_can_be_switched_off_and_on(stage):
    base = make(**only())
    on = make(**only(stage))
    differs = sum(not np.array_equal(gray(base.render(i)[0]), gray(on.render(i)[0])) for i in range(6))
    assert differs >= 4, stage  # the stage changes the images when on (most images: a curve can be tiny)
    assert f"stages off: {', '.join(s for s in STAGES if s != stage)}" in on.report.lines()


def test_plain_style_turns_off_every_stage_not_set():
    spec = SynthSpec(style="plain", blur={"p": 0.7})
    assert spec.blur.p == 0.7 and all(getattr(spec, s).p == 0 for s in STAGES if s != "blur")
    assert SynthSpec().distort.p > 0


def test_wide_font_pool_without_download():
    faces = find_fonts("".join(sorted(LOWER36 | {c.upper() for c in LOWER36})))
    families = {family_group(f) for f in faces}
    assert {"Aileron", "DejaVu", "STIX", "Computer Modern", "Roboto", "Lobster", "Oswald"} <= families
    assert len(families) >= 40
    assert any(f.axes for f in faces)  # variable fonts: the weight is drawn per image


def test_case_sensitive_charset_skips_capitals_only_faces():
    symbols = "".join(sorted(LOWER36 | {c.upper() for c in LOWER36}))
    folded = {f.family for f in find_fonts(symbols)}
    cased = {f.family for f in find_fonts(symbols, (), True)}
    assert "Bebas Neue" in folded and "Bebas Neue" not in cased
    from cvlab.data.synth.fonts import scan_fonts

    assert "BebasNeue-Regular.ttf" in scan_fonts(symbols, (), True)[1]
    alnum = SynthWords(SynthSpec(size=4), resolve_charset("alnum62"), ImageCfg())
    n = len(scan_fonts("".join(sorted(set(resolve_charset("alnum62")) | set(".-:%"))), (), True)[1])
    assert f"{n} fonts skipped: they cannot draw every symbol needed" in " ".join(alnum.report.lines())


def test_synth_reports_its_fonts_and_text_mix():
    lines = make().report.lines()
    assert lines[0].startswith("rendering with ") and "families" in lines[0]
    assert lines[1].startswith("text: lexicon 70%, random 10%, digits 10%, mixed 10%")


def test_mixed_case_charset_renders_cased_words():
    ds = SynthWords(SynthSpec(size=200), resolve_charset("alnum62"), ImageCfg())
    labels = [ds[i][1] for i in range(200)]
    assert any(label.isupper() for label in labels) and any(label.islower() for label in labels)


def test_rgb_and_keep_ratio_geometry():
    image = ImageCfg(height=32, width=160, channels=3, resize="keep_ratio")
    ds = SynthWords(SynthSpec(size=8), resolve_charset("lower36"), image)
    t, _ = ds[0]
    assert t.shape == (3, 32, 160)


def test_bad_stage_parameters_name_the_key():
    from cvlab.config import load_config
    from cvlab.errors import CvlabError

    with pytest.raises(CvlabError, match=r"data\.train\[0\]\.blur\.p"):
        load_config(raw={"data": {"train": [{"type": "synth", "blur": {"p": 2}}]}})
    with pytest.raises(CvlabError, match=r"jpeg.quality"):
        load_config(raw={"data": {"train": [{"type": "synth", "jpeg": {"quality": [50, 99]}}]}})


def test_step_sampler_is_a_function_of_the_step():
    full = list(StepSampler(n=10, batch_size=4, seed=3, steps=6))
    resumed = list(StepSampler(n=10, batch_size=4, seed=3, steps=6, start=4))
    assert resumed == full[4:]
    flat = [i for b in full[:5] for i in b]  # 20 draws = two epochs, each a permutation of 0..9
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert np.any(np.array(flat[:10]) != np.array(flat[10:20]))


def test_data_preview_shows_the_synthetic_recipe_and_a_stage(cli, tmp_path):
    from PIL import Image

    code, out, err = cli("data", "preview", "--type", "synth", "--count", "8", "--out", tmp_path / "s.png")
    assert code == 0, err
    assert "8 samples" in out and Image.open(tmp_path / "s.png").size[0] > 100
    code, _, err = cli("data", "preview", "--type", "synth", "--opt", "style=plain", "--opt", "blur={p: 2}",
                       "--out", tmp_path / "b.png")
    assert code == 2 and "blur.p" in err and not (tmp_path / "b.png").exists()
