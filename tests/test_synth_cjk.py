"""Chinese text end to end (issue 24): the `cjk` extra's faces and word list, the per-text coverage rule (a face
missing a glyph is never used for that text, and the refusal is counted), every recipe stage on hanzi, the
`chinese` protocol, beam search and `cvlab lm build` with gb2312-l1, and benchmarks/large_charset.py."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from cvlab.config import ImageCfg, SynthSpec
from cvlab.config.synth import STAGES
from cvlab.data.charset import resolve_charset
from cvlab.data.synth import SynthWords
from cvlab.data.synth import fonts as fonts_mod
from cvlab.data.synth.cjk import east_asian, word_list
from cvlab.data.synth.fonts import Face, FontPool, font_faces, font_pool
from cvlab.engine.eval.protocols import get_protocol
from cvlab.errors import CvlabError

ROOT = Path(__file__).resolve().parent.parent
GB = resolve_charset("gb2312-l1")
NEWER = "鿏"  # U+9FCF (Unicode 6.1): Noto Sans CJK SC and Noto Serif SC draw it, WenQuanYi Micro Hei does not
WQY = "WenQuanYi Micro Hei"

pytestmark = pytest.mark.skipif(
    not fonts_mod._cjk_candidates(()) or not word_list()[0],
    reason="the cjk extra is not installed (pip install -e '.[cjk]'; `make test` installs it)")


def make(charset: str = GB, image: ImageCfg | None = None, **kw) -> SynthWords:
    kw = {"size": 64, "max_len": 8, **kw}
    return SynthWords(SynthSpec(**kw), charset, image or ImageCfg(height=32, width=128, resize="keep_ratio"))


def gray(img) -> np.ndarray:
    return np.asarray(img.convert("L"), dtype=np.float32)


def test_chinese_lines_are_drawn_from_the_chinese_faces_with_labels_in_the_charset():
    ds = make()
    assert {f.family for f in ds.faces} >= {"Noto Sans CJK", "Noto Serif SC", WQY}
    assert any(f.axes for f in ds.faces)  # the variable Noto Sans CJK: a weight per image
    lines = ds.report.lines()
    assert lines[0].startswith("rendering with ") and any("Chinese words from jieba" in x for x in lines)
    labels = [ds.render(i)[1] for i in range(40)]
    assert all(1 <= len(label) <= 8 and set(label) <= set(GB) for label in labels)
    # phrases of real words (88 % of lines): a line starts with a word of the list, whole or cut at its end
    starts = {w[:2] for w in ds.texts.words} | {w for w in ds.texts.words if len(w) == 1}
    assert sum(label[:2] in starts for label in labels) >= 28
    img = gray(ds.render(0)[0])
    assert img.std() > 10  # ink on a ground, not a blank tile


def test_same_index_same_pixels_and_a_fresh_dataset_agrees():
    a, b = make(), make()
    for i in (0, 5, 63):
        ta, la = a[i]
        tb, lb = b[i]
        assert la == lb and torch.equal(ta, tb)
        assert a.label(i) == la
    assert [a[i][1] for i in range(10)] != [make(seed=1)[i][1] for i in range(10)]


def test_a_face_missing_a_character_is_refused_for_that_text_and_counted():
    charset = "中文字体测试" + NEWER
    ds = make(charset)
    wqy = next(f for f in ds.faces if f.family == WQY)
    assert ds.pool.covers is not None and NEWER not in ds.pool.covers[wqy]
    assert any(line.startswith(f"{WQY} draws 6 of the 7 symbols") for line in ds.report.lines())
    # the pool alone: a text with the character never goes to WenQuanYi, and each pass is counted
    pool = ds.pool
    pool.refused.clear()
    picks = Counter(pool.pick(np.random.default_rng(k), "中" + NEWER).family for k in range(60))
    assert WQY not in picks and len(picks) == 2
    assert pool.refused[WQY] == 60 and sum(pool.refused.values()) == 60
    picks = Counter(pool.pick(np.random.default_rng(k), "中文").family for k in range(60))
    assert WQY in picks and pool.refused[WQY] == 60  # a text it covers: no refusal
    # rendering: every sample whose text has the character is counted against WenQuanYi once
    pool.refused.clear()
    with_it = sum(NEWER in ds.render(i)[1] for i in range(64))
    assert with_it > 0 and pool.refused[WQY] >= with_it


def test_a_text_no_single_face_draws_is_drawn_again_and_counted():
    from cvlab.config.synth import CaseCfg, WordsCfg
    from cvlab.data.synth.words import TextSource

    a, b = Face("a.ttf", "A"), Face("b.ttf", "B")
    pool = FontPool((a, b), {a: frozenset("中文"), b: frozenset("字体")})  # no face has both halves
    texts = TextSource(WordsCfg(lexicon=0, random=1, digits=0, mixed=0), CaseCfg(), "中文字体", fold=lambda s: s,
                       min_len=2, max_len=4)
    notes = texts.restrict(pool)
    assert notes and "drawn again" in notes[0] and texts.redrawn == 0  # the probe's count is reported, then reset
    drawn = [texts(np.random.default_rng(k))[0] for k in range(40)]
    assert all(pool.can_draw(t) for t in drawn) and texts.redrawn > 0


def test_every_stage_works_on_hanzi():
    base = make(style="plain", color="dark_on_light")
    for stage in STAGES:
        on = make(style="plain", color="dark_on_light", **{stage: {"p": 1.0}})
        differs = sum(not np.array_equal(gray(base.render(i)[0]), gray(on.render(i)[0])) for i in range(4))
        assert differs >= 3, stage
    # background word texture: the cut-off neighbouring line is a Chinese line too, in a face that draws it
    words = make(background={"p": 1.0, "kinds": ["word"]})
    assert all(words.render(i)[0].size[0] > 0 for i in range(6))
    # a tight crop: ink reaches near the top and the bottom of the crop
    tight = make(style="plain", color="dark_on_light", crop={})
    for i in range(10):
        g = gray(tight.render(i)[0])
        rows = np.nonzero((g < 128).any(axis=1))[0]
        assert rows[0] <= 0.2 * g.shape[0] and rows[-1] >= 0.8 * g.shape[0]


def test_digits_and_latin_mixed_tokens_when_the_charset_has_them():
    charset = GB + "0123456789abcdefghijklmnopqrstuvwxyz"
    ds = make(charset, size=300, max_len=10)
    assert ds.texts.sources == ["lexicon", "random", "digits", "mixed"]
    labels = [ds.render(i)[1] for i in range(300)]
    assert all(set(label.lower()) <= set(charset) for label in labels)
    assert any(label.isdigit() for label in labels)
    assert any(any(c.isdigit() or c.isascii() for c in label) and any(not c.isascii() for c in label)
               for label in labels)
    # gb2312-l1 alone writes neither digits nor Latin: phrases and random strings only
    assert make().texts.sources == ["lexicon", "random"]


def test_latin_pools_stay_latin():
    pool, _ = font_pool("0123456789abcdefghijklmnopqrstuvwxyz")
    assert pool.full and not any("CJK" in f.family or f.index for f in pool.faces)
    assert not east_asian("abc") and east_asian("abc中")


def test_coverage_is_cached_on_disk_and_keyed_by_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    src = Path(fonts_mod._cjk_candidates(())[-1][0])
    font = tmp_path / src.name
    font.write_bytes(src.read_bytes())
    first = font_faces(str(font))
    cached = list((tmp_path / "cache" / "cvlab" / "fonts").glob("*.json"))
    assert len(cached) == 1 and first[0]["ranges"]
    monkeypatch.setattr(fonts_mod, "_read_faces", lambda p: pytest.fail("read again despite the cache"))
    assert font_faces(str(font)) == first
    font.write_bytes(src.read_bytes() + b"\0")  # another size: another key, read again
    with pytest.raises(pytest.fail.Exception):
        font_faces(str(font))


def test_without_a_chinese_face_the_error_names_the_extra(monkeypatch, cli, tmp_path):
    monkeypatch.setattr(fonts_mod, "CJK_PACKAGES", ())
    fonts_mod.scan_east_asian.cache_clear()
    try:
        with pytest.raises(CvlabError, match=r"cvlab\[cjk\]"):
            make()
        code, _, err = cli("data", "preview", "--type", "synth", "--charset", "gb2312-l1", "--out", tmp_path / "p.png")
        assert code == 2 and "cvlab[cjk]" in err and len(err.strip().splitlines()) == 1
    finally:
        fonts_mod.scan_east_asian.cache_clear()


def test_data_preview_draws_chinese_lines(cli, tmp_path):
    from PIL import Image

    code, out, err = cli("data", "preview", "--type", "synth", "--charset", "gb2312-l1", "--count", "4",
                         "--width", "160", "--out", tmp_path / "cjk.png")
    assert code == 0, err
    assert "4 samples" in out and Image.open(tmp_path / "cjk.png").size[0] > 160


def test_chinese_protocol_folds_width_and_drops_spaces():
    p = get_protocol("chinese")
    assert p.label("２０２３年　第３季度")[0] == "2023年第3季度"
    assert p.pred("ＡＢＣ，中 文") == "ABC,中文"
    assert p.label("中文")[0] == "中文" and p.empty_ned("", "") == 1.0
    from cvlab.engine.eval.metrics import score

    res = score(["２０２３年", "中国"], ["2023年", "中图"], protocol="chinese")
    assert res["word_acc"] == 0.5


def _peaked(tok, frames: list, sharp: float = 6.0) -> torch.Tensor:
    import math

    rows = []
    for f in frames:
        probs = torch.full((tok.num_classes,), 1e-3)
        for sym, p in (f.items() if isinstance(f, dict) else [(f, 1.0)]):
            probs[0 if sym == "-" else tok.stoi[sym]] = p * math.exp(sharp)
        rows.append(probs.log())
    return torch.stack(rows)[None]


def test_beam_search_and_lm_build_with_gb2312(tmp_path, cli):
    pytest.importorskip("flashlight.lib.text")
    from cvlab.data.tokenizer import CTCTokenizer
    from cvlab.engine.eval.decode import CTCBeam

    lines = tmp_path / "lines.txt"
    lines.write_text("中国人民\n我爱中国\n人民日报2023\n中国银行\n国家大事\n", encoding="utf-8")
    arpa = tmp_path / "zh.arpa"
    code, out, err = cli("lm", "build", lines, "--order", "3", "--charset", "gb2312-l1", "--out", arpa)
    assert code == 0, err
    assert "4 characters outside the charset dropped" in out  # 2023
    unigrams = {r.split("\t")[1] for r in arpa.read_text(encoding="utf-8").split("\\2-grams:")[0]
                .split("\\1-grams:")[1].strip().splitlines()} - {"<s>", "</s>", "<unk>"}
    assert unigrams == set("中国人民我爱日报银行家大事")
    tok = CTCTokenizer(GB)
    # the middle frame leans to 图 (0.55) over 国 (0.45): the network alone reads 中图人
    logits = _peaked(tok, ["中", "-", {"图": 0.55, "国": 0.45}, "-", "人"])
    assert tok.decode(CTCBeam(tok, 8)(None, None, logits)[0][0]) == "中图人"
    assert tok.decode(CTCBeam(tok, 8, lm=str(arpa), lm_weight=1.0)(None, None, logits)[0][0]) == "中国人"


def test_large_charset_benchmark_prints_the_split():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "large_charset.py"), "--batch-size", "2",
                           "--width", "32", "--label-len", "2", "--steps", "1", "--warmup", "0", "--threads", "1",
                           "--charsets", "gb2312-l1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for head, classes in (("ctc", "3,756"), ("attention", "3,757")):
        assert f"{head} head, gb2312-l1 ({classes} classes)" in out
    for part in ("backbone + sequence", "head", "loss", "optimizer"):
        assert out.count(f"  {part} ") == 2, part
