"""`cvlab import dtrb`: a state dict laid out as DTRB saves it maps onto cvlab's model completely, and the
imported model computes what DTRB's computes.

`Dtrb` below re-states DTRB's module structure (clovaai/deep-text-recognition-benchmark model.py and modules/):
the names, shapes and forward pass, at tiny widths, so the test needs no DTRB checkout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cvlab.engine.import_dtrb import CHARSETS, import_dtrb, parse_arch
from cvlab.engine.runs.load import load_run
from cvlab.errors import CvlabError


def cbr(cin, cout, k=3, s=1, p=1):  # conv (no bias) + BN + ReLU, DTRB's repeated pattern, as three modules
    return [nn.Conv2d(cin, cout, k, s, p, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]


class Localization(nn.Module):
    def __init__(self, F_, cin):
        super().__init__()
        self.F = F_
        self.conv = nn.Sequential(*cbr(cin, 64), nn.MaxPool2d(2, 2), *cbr(64, 128), nn.MaxPool2d(2, 2),
                                  *cbr(128, 256), nn.MaxPool2d(2, 2), *cbr(256, 512), nn.AdaptiveAvgPool2d(1))
        self.localization_fc1 = nn.Sequential(nn.Linear(512, 256), nn.ReLU(True))
        self.localization_fc2 = nn.Linear(256, F_ * 2)

    def forward(self, x):
        return self.localization_fc2(self.localization_fc1(self.conv(x).flatten(1))).view(x.shape[0], self.F, 2)


class Grid(nn.Module):
    def __init__(self, F_, h, w):
        super().__init__()
        x = np.linspace(-1.0, 1.0, F_ // 2)
        C = np.concatenate([np.stack([x, -np.ones(F_ // 2)], 1), np.stack([x, np.ones(F_ // 2)], 1)])
        hat = np.linalg.norm(C[:, None] - C[None], axis=2)
        np.fill_diagonal(hat, 1)
        hat = hat ** 2 * np.log(hat)
        delta = np.concatenate([np.concatenate([np.ones((F_, 1)), C, hat], 1),
                                np.concatenate([np.zeros((2, 3)), C.T], 1),
                                np.concatenate([np.zeros((1, 3)), np.ones((1, F_))], 1)])
        gx, gy = (np.arange(-w, w, 2) + 1.0) / w, (np.arange(-h, h, 2) + 1.0) / h
        P = np.stack(np.meshgrid(gx, gy), axis=2).reshape(-1, 2)
        r = np.linalg.norm(P[:, None] - C[None], axis=2)
        P_hat = np.concatenate([np.ones((len(P), 1)), P, r ** 2 * np.log(r + 1e-6)], 1)
        self.register_buffer("inv_delta_C", torch.tensor(np.linalg.inv(delta)).float())
        self.register_buffer("P_hat", torch.tensor(P_hat).float())


class TPS(nn.Module):
    def __init__(self, h, w, cin, F_=20):
        super().__init__()
        self.size = (h, w)
        self.LocalizationNetwork = Localization(F_, cin)
        self.GridGenerator = Grid(F_, h, w)

    def forward(self, x):
        c = self.LocalizationNetwork(x)
        T = self.GridGenerator.inv_delta_C @ torch.cat([c, c.new_zeros(x.shape[0], 3, 2)], 1)
        grid = (self.GridGenerator.P_hat @ T).reshape(x.shape[0], *self.size, 2)
        return F.grid_sample(x, grid, padding_mode="border", align_corners=True)


def vgg(cin, oc):
    c = [oc // 8, oc // 4, oc // 2, oc]
    return nn.Sequential(nn.Conv2d(cin, c[0], 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2, 2),
                         nn.Conv2d(c[0], c[1], 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2, 2),
                         nn.Conv2d(c[1], c[2], 3, 1, 1), nn.ReLU(True), nn.Conv2d(c[2], c[2], 3, 1, 1), nn.ReLU(True),
                         nn.MaxPool2d((2, 1), (2, 1)), *cbr(c[2], c[3]), *cbr(c[3], c[3]),
                         nn.MaxPool2d((2, 1), (2, 1)), nn.Conv2d(c[3], c[3], 2, 1, 0), nn.ReLU(True))


class Block(nn.Module):
    def __init__(self, cin, planes, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
    def __init__(self, cin, oc):
        super().__init__()
        blocks = [oc // 4, oc // 2, oc, oc]
        self.inplanes = oc // 8
        self.conv0_1, self.bn0_1 = nn.Conv2d(cin, oc // 16, 3, 1, 1, bias=False), nn.BatchNorm2d(oc // 16)
        self.conv0_2, self.bn0_2 = nn.Conv2d(oc // 16, oc // 8, 3, 1, 1, bias=False), nn.BatchNorm2d(oc // 8)
        pools = [nn.MaxPool2d(2, 2), nn.MaxPool2d(2, 2), nn.MaxPool2d(2, (2, 1), (0, 1))]
        for i, n in enumerate((1, 2, 5, 3)):
            if i < 3:
                setattr(self, f"maxpool{i + 1}", pools[i])
            setattr(self, f"layer{i + 1}", self._layer(blocks[i], n))
            if i < 3:
                setattr(self, f"conv{i + 1}", nn.Conv2d(blocks[i], blocks[i], 3, 1, 1, bias=False))
                setattr(self, f"bn{i + 1}", nn.BatchNorm2d(blocks[i]))
        self.conv4_1, self.bn4_1 = nn.Conv2d(oc, oc, 2, (2, 1), (0, 1), bias=False), nn.BatchNorm2d(oc)
        self.conv4_2, self.bn4_2 = nn.Conv2d(oc, oc, 2, 1, 0, bias=False), nn.BatchNorm2d(oc)

    def _layer(self, planes, n):
        down = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, 1, bias=False), nn.BatchNorm2d(planes)) \
            if self.inplanes != planes else None
        layers = [Block(self.inplanes, planes, down)] + [Block(planes, planes) for _ in range(n - 1)]
        self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        x = F.relu(self.bn0_2(self.conv0_2(F.relu(self.bn0_1(self.conv0_1(x))))))
        for i in range(1, 4):
            x = getattr(self, f"layer{i}")(getattr(self, f"maxpool{i}")(x))
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
        x = self.layer4(x)
        return F.relu(self.bn4_2(self.conv4_2(F.relu(self.bn4_1(self.conv4_1(x))))))


class Feat(nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.ConvNet = conv

    def forward(self, x):
        return self.ConvNet(x)


class BiLSTM(nn.Module):
    def __init__(self, cin, hidden, cout):
        super().__init__()
        self.rnn = nn.LSTM(cin, hidden, bidirectional=True, batch_first=True)
        self.linear = nn.Linear(2 * hidden, cout)

    def forward(self, x):
        return self.linear(self.rnn(x)[0])


class Cell(nn.Module):
    def __init__(self, cin, hidden, n):
        super().__init__()
        self.i2h, self.h2h = nn.Linear(cin, hidden, bias=False), nn.Linear(hidden, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)
        self.rnn = nn.LSTMCell(cin + n, hidden)


class Attn(nn.Module):
    def __init__(self, cin, hidden, n):
        super().__init__()
        self.attention_cell, self.generator, self.n, self.hidden = Cell(cin, hidden, n), nn.Linear(hidden, n), n, hidden

    def forward(self, H, steps=26):  # DTRB's inference: greedy, [GO] first, `batch_max_length + 1` steps
        cell = self.attention_cell
        h = (H.new_zeros(H.shape[0], self.hidden), H.new_zeros(H.shape[0], self.hidden))
        prev, out = torch.zeros(H.shape[0], dtype=torch.long), []
        for _ in range(steps):
            alpha = F.softmax(cell.score(torch.tanh(cell.i2h(H) + cell.h2h(h[0]).unsqueeze(1))), dim=1)
            context = torch.bmm(alpha.permute(0, 2, 1), H).squeeze(1)
            h = cell.rnn(torch.cat([context, F.one_hot(prev, self.n).float()], 1), h)
            out.append(self.generator(h[0]))
            prev = out[-1].argmax(1)
        return torch.stack(out, 1)


class Dtrb(nn.Module):
    def __init__(self, arch, h, w, oc, hidden, n_chars, cin=1):
        super().__init__()
        self.stages = arch.split("-")
        trans, feat, seq, pred = self.stages
        if trans == "TPS":
            self.Transformation = TPS(h, w, cin)
        self.FeatureExtraction = Feat(vgg(cin, oc) if feat == "VGG" else ResNet(cin, oc))
        out = oc
        if seq == "BiLSTM":
            self.SequenceModeling = nn.Sequential(BiLSTM(oc, hidden, hidden), BiLSTM(hidden, hidden, hidden))
            out = hidden
        self.Prediction = nn.Linear(out, n_chars + 1) if pred == "CTC" else Attn(out, hidden, n_chars + 2)

    def forward(self, x):  # x in [-1, 1], as DTRB's AlignCollate gives it
        if self.stages[0] == "TPS":
            x = self.Transformation(x)
        f = self.FeatureExtraction(x).permute(0, 3, 1, 2).mean(3)  # AdaptiveAvgPool2d((None, 1)) + squeeze
        if self.stages[2] == "BiLSTM":
            f = self.SequenceModeling(f)
        return self.Prediction(f)


def _randomize(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if "running_var" in name:
                t.uniform_(0.5, 2.0)
            elif "running_mean" in name or name.endswith("bias"):
                t.uniform_(-0.2, 0.2)
            elif "localization_fc2.weight" in name:
                t.normal_(0, 0.01)  # a warp that is not the identity, so the sampler convention matters
    return model.eval()


CASES = [  # arch, height, width, output_channel, hidden, sensitive
    ("None-VGG-BiLSTM-CTC", 32, 40, 32, 8, False),
    ("None-ResNet-None-Attn", 32, 24, 32, 8, True),
    ("TPS-VGG-BiLSTM-Attn", 32, 32, 512, 8, False),
]


@pytest.mark.parametrize("arch,h,w,oc,hidden,sensitive", CASES)
def test_dtrb_state_dict_imports_completely_and_computes_the_same(tmp_path, arch, h, w, oc, hidden, sensitive):
    charset = CHARSETS["sensitive" if sensitive else "default"]
    ref = _randomize(Dtrb(arch, h, w, oc, hidden, len(charset)))
    path = tmp_path / "dtrb.pth"
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, path)  # as DataParallel saves it
    info = import_dtrb(path, arch, sensitive=sensitive, height=h, width=w, runs_dir=tmp_path / "runs")
    assert set(info["mapping"]) == set(ref.state_dict())  # every DTRB tensor used
    assert info["arch"] == arch
    loaded = load_run(info["run"])
    assert loaded.tokenizer.charset == charset and loaded.cfg.data.image.interpolation == "bicubic"
    x = torch.rand(2, 1, h, w)
    with torch.no_grad():
        ours, theirs = loaded.model(x), ref(x * 2 - 1)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)
    if arch.startswith("TPS"):  # the rectified image itself (a sampler off by half a pixel differs by ~0.2)
        with torch.no_grad():
            torch.testing.assert_close(loaded.model.transform(x * 2 - 1), ref.Transformation(x * 2 - 1), atol=1e-3,
                                       rtol=0)
    assert json.loads((loaded.run / "import.json").read_text())["mapping"] == info["mapping"]


def test_eval_scores_an_imported_run(tmp_path, cli):
    ref = _randomize(Dtrb("None-VGG-None-CTC", 32, 32, 32, 8, 36))
    path = tmp_path / "crnn.pth"
    torch.save(ref.state_dict(), path)  # saved without DataParallel: no prefix
    code, out, err = cli("import", "dtrb", path, "--width", "32", "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    assert "None-VGG-None-CTC" in out and "every tensor mapped" in out
    run = next((tmp_path / "runs").glob("*/*"))
    code, out, err = cli("eval", run, "--data", "synth", "--opt", "size=4", "--opt", "max_len=3")
    assert code == 0, err
    assert "protocol dtrb" in err  # the title: stderr, beside tsv rows


def test_unhostable_and_mismatched_checkpoints_say_why(tmp_path, cli):
    with pytest.raises(CvlabError, match="no RCNN"):
        parse_arch("TPS-RCNN-BiLSTM-Attn")
    with pytest.raises(CvlabError, match="Feat stage 'Res'"):
        parse_arch("None-Res-BiLSTM-CTC")
    ref = _randomize(Dtrb("None-VGG-None-CTC", 32, 32, 32, 8, 10))
    torch.save(ref.state_dict(), tmp_path / "digits.pth")
    code, _, err = cli("import", "dtrb", tmp_path / "digits.pth", "--runs-dir", tmp_path / "runs")
    assert code == 2 and "11 classes" in err and "--character" in err
    code, _, err = cli("import", "dtrb", tmp_path / "digits.pth", "--arch", "None-VGG-BiLSTM-CTC")
    assert code == 2 and "those of None-VGG-None-CTC" in err
    code, _, err = cli("import", "dtrb", tmp_path / "digits.pth", "--character", "0123456789",
                       "--runs-dir", tmp_path / "runs")
    assert code == 0, err


def test_a_wrong_file_is_one_plain_line_without_torch_text(tmp_path, cli, capsys):
    """A training checkpoint (numpy RNG state: torch's weights-only refusal, with ANSI codes), a truncated file
    and a text file: each one line naming the file, no torch advice, no colour codes; nothing written."""
    ref = _randomize(Dtrb("None-VGG-None-CTC", 32, 32, 32, 8, 36))
    good = tmp_path / "crnn.pth"
    torch.save(ref.state_dict(), good)
    training = tmp_path / "last.pt"
    torch.save({"model": ref.state_dict(), "rng": np.random.get_state()}, training)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    cases = {training: "not a plain state dict", cut: "not a complete checkpoint (truncated or not a torch file)",
             text: "not a complete checkpoint (truncated or not a torch file)"}
    for path, expected in cases.items():
        with pytest.raises(CvlabError) as e:
            import_dtrb(path, runs_dir=tmp_path / "runs")
        msg = str(e.value)
        assert msg.startswith(f"{path}: {expected}") and "\x1b" not in msg and "\n" not in msg, msg
        assert "Weights only" not in msg and "weights_only" not in msg and "Errno" not in msg, msg
        capsys.readouterr()
        from cvlab.cli import run

        code = run(["import", "dtrb", str(path), "--runs-dir", str(tmp_path / "runs")])
        raw = capsys.readouterr().err  # not the fixture: it strips ANSI codes, which must not be there at all
        assert code == 2 and "\x1b" not in raw and "Traceback" not in raw, raw
        assert [ln for ln in raw.splitlines() if ln.strip()] == [f"error: {msg}"], raw
    assert not (tmp_path / "runs").exists()


def test_an_unwritable_runs_dir_is_refused_before_reading_the_file(tmp_path, cli):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")  # never read: the output check comes first
    code, _, err = cli("import", "dtrb", text, "--runs-dir", blocker / "runs")
    assert code == 2 and f"--runs-dir {blocker / 'runs'}: {blocker} is a file" in err and "Traceback" not in err
