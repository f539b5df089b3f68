import torch

from cvlab.config import ModelCfg
from cvlab.models import build_model
from cvlab.models.heads import CTCHead


def test_standard_crnn_matches_the_published_configuration():
    # DTRB's None-VGG-BiLSTM-CTC with 37 classes: 8,451,621 parameters; a 32×100 input gives DTRB's 24 frames
    # (its last 2×2 conv is unpadded: W/4 - 1)
    model = build_model(ModelCfg.model_validate({"backbone": {"size": "standard"}}), 37).model
    assert sum(p.numel() for p in model.parameters()) == 8_451_621
    assert model(torch.rand(2, 1, 32, 100)).shape == (2, 24, 37)


def test_every_crnn_size_has_width_over_four_minus_one_frames():
    for size in ("tiny", "small", "standard"):
        model = build_model(ModelCfg.model_validate({"backbone": {"size": size}}), 11).model
        for width in (64, 100, 160):
            assert model(torch.rand(3, 1, 32, width)).shape == (3, width // 4 - 1, 11)


def test_ctc_greedy_decoding_merges_repeats_and_drops_blanks():
    head = CTCHead(4, 4)
    path = [1, 1, 0, 1, 2, 2, 0, 0, 3]  # a a _ a b b _ _ c  ->  a a b c
    logits = torch.full((1, len(path), 4), -10.0)
    logits[0, torch.arange(len(path)), torch.tensor(path)] = 10.0
    ids, conf = head.decode(logits)
    assert ids == [[1, 1, 2, 3]]
    assert 0.99 < conf[0] <= 1.0
