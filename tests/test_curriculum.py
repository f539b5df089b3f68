"""The synthetic curriculum: clean short words first, the full recipe from `curriculum.samples` on, sample i still
a pure function of (seed, i), and a training stream that reads the set in index order."""

import pytest

from cvlab.config.data import DataCfg
from cvlab.config.synth import STAGES, SynthSpec
from cvlab.data.loaders import train_loader
from cvlab.data.sampling import StepSampler
from cvlab.data.synth import SynthWords
from cvlab.errors import CvlabError

CHARSET = "0123456789abcdefghijklmnopqrstuvwxyz"


def synth(**kw) -> SynthWords:
    return SynthWords(SynthSpec(size=400, seed=3, words={"builtin_only": True}, **kw), CHARSET, DataCfg().image)


def test_ramp_scales_every_stage_and_caps_the_length():
    ds = synth(curriculum={"samples": 200, "start": 0.0, "max_len": 3})
    first, mid = ds.spec_at(0), ds.spec_at(100)
    assert all(getattr(first, st).p == 0 for st in STAGES) and first.crop.neighbour_p == 0
    assert all(getattr(mid, st).p == pytest.approx(getattr(ds.spec, st).p * 0.5) for st in STAGES)
    assert ds.spec_at(200) is ds.spec and ds.spec_at(399) is ds.spec
    assert ds.cap_at(0) == 3 and ds.cap_at(100) == round(3 + (12 - 3) * 0.5) and ds.cap_at(250) is None
    assert all(1 <= len(ds.label(i)) <= ds.cap_at(i) for i in range(120))
    assert all(len(ds.label(i)) <= 3 for i in range(12))
    assert max(len(ds.label(i)) for i in range(200, 400)) > 3


def test_samples_stay_pure_functions_of_the_index():
    a, b = synth(curriculum={"samples": 100}), synth(curriculum={"samples": 100})
    for i in (0, 57, 150):
        ia, la, _ = a.render(i)
        ib, lb, _ = b.render(i)
        assert la == lb and ia.tobytes() == ib.tobytes()
        assert la == a.label(i)
    # past the ramp, the curriculum changes nothing: the same pixels as without one
    plain = synth()
    img, label, _ = a.render(150)
    ref, ref_label, _ = plain.render(150)
    assert label == ref_label and img.tobytes() == ref.tobytes()


def test_curriculum_reads_the_set_in_index_order():
    ds = synth(curriculum={"samples": 100})
    assert ds.ordered and not synth().ordered
    loader = train_loader({"synth": ds}, 4, seed=0, steps=3, start=1, workers=0)
    assert list(loader.batch_sampler) == [[4, 5, 6, 7], [8, 9, 10, 11]]
    # two ranks of batch 2 read what one of batch 4 reads
    ranks = [StepSampler(400, 2, seed=0, steps=2, rank=r, world=2, ordered=True) for r in (0, 1)]
    assert [x for step in zip(*ranks, strict=True) for b in step for x in b] == list(range(8))


def test_curriculum_must_be_the_only_training_set():
    with pytest.raises(CvlabError, match=r"data.train\[0\].curriculum"):
        train_loader({"a": synth(curriculum={"samples": 100}), "b": synth()}, 4, seed=0, steps=2, start=0,
                     workers=0)
    with pytest.raises(ValueError, match="same_source"):
        SynthSpec(curriculum={"samples": 10}, same_source=2)
