"""Tiny datasets written in each family's real on-disk form, quirks included (shared by tests/test_data_*.py)."""

from __future__ import annotations

import io
from pathlib import Path

import lmdb
import numpy as np
from PIL import Image


def png(path: Path, w: int, h: int, value: int = 128) -> Path:
    """A w×h grey PNG whose pixel (x, y) is (value + x + 3y) % 256, so crops can be checked pixel by pixel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(page_array(w, h, value)).save(path)
    return path


def page_array(w: int, h: int, value: int = 128) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return ((value + x + 3 * y) % 256).astype(np.uint8)


def truncated_jpeg(path: Path) -> Path:
    buf = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 10, 10)).save(buf, format="JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def png_bytes(w: int, h: int, value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(page_array(w, h, value)).save(buf, format="PNG")
    return buf.getvalue()


def write_lmdb(folder: Path, entries: list[tuple[bytes | None, bytes | None]], num: int | None = None) -> Path:
    """entries[i] = (image bytes or None, label bytes or None), stored 1-based as DTRB does."""
    folder.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(folder), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, (img, lab) in enumerate(entries, 1):
            if img is not None:
                txn.put(b"image-%09d" % i, img)
            if lab is not None:
                txn.put(b"label-%09d" % i, lab)
        txn.put(b"num-samples", str(len(entries) if num is None else num).encode())
    env.close()
    return folder


def read_lmdb(folder: Path) -> list[tuple[bytes, str]]:
    """An independent reader: plain lmdb calls, the DTRB key layout."""
    from cvlab.data.formats.lmdb import close_env

    close_env(folder)  # py-lmdb allows one open environment per path and process
    env = lmdb.open(str(folder), readonly=True, lock=False)
    with env.begin() as txn:
        n = int(txn.get(b"num-samples"))
        out = [(bytes(txn.get(b"image-%09d" % i)), txn.get(b"label-%09d" % i).decode()) for i in range(1, n + 1)]
    env.close()
    return out


def make_folder(root: Path) -> Path:
    png(root / "a" / "1.png", 30, 10)
    png(root / "b.png", 20, 10)
    png(root / "c d.png", 12, 10)
    truncated_jpeg(root / "broken.jpg")
    (root / "gt.txt").write_bytes(
        "a/1.png\tHello world\r\n"       # tab, label with a space, CRLF
        "b.png  Zoë\n"                     # whitespace fallback
        "missing.png\tgone\n"              # missing image: dropped at index time
        "broken.jpg\ttrunc\n"              # truncated JPEG: found at load time
        "c d.png\tspaced path\n".encode())
    return root


def make_lmdb(root: Path) -> Path:
    """root/evaluation/A (3 good, a label-only entry, an unlabelled image) and root/evaluation/B (1 good, 1 truncated)."""
    buf = io.BytesIO()
    Image.new("RGB", (40, 20), (0, 0, 0)).save(buf, format="JPEG")
    write_lmdb(root / "evaluation" / "A", [(png_bytes(10, 8, 1), b"one"), (png_bytes(12, 8, 2), b"Two!"),
                                           (None, b"labelonly"), (png_bytes(14, 8, 3), "né".encode()),
                                           (png_bytes(8, 8, 5), None)])  # an image without its label
    write_lmdb(root / "evaluation" / "B", [(png_bytes(9, 8, 4), b"b1"), (buf.getvalue()[:40], b"trunc")])
    return root


def make_icdar(root: Path, family: str = "ic13") -> Path:
    if family == "ic13":
        images, gt, bom, nl = root / "Challenge2_Test_Task3_Images", root / "Challenge2_Test_Task3_GT.txt", b"", b"\r\n"
    else:
        images, gt, bom, nl = root / "ch4_test_word_images_gt", root / "Challenge4_Test_Task3_GT.txt", b"\xef\xbb\xbf", b"\r\n"
    for i, w in enumerate((20, 22, 24, 26, 28, 30), 1):
        png(images / f"word_{i}.png", w, 12)
    lines = ['word_1.png, "Tiredness"', 'word_2.png, "0,6"', 'word_3.png, "TOUBI\'S"',
             'word_4.png, "[falling"', 'word_5.png, "say \\"hi\\" \\\\o/"', 'word_6.png, "ab"']
    gt.write_bytes(bom + nl.join(s.encode() for s in lines) + nl)
    return root


def make_iiit5k(root: Path) -> Path:
    from scipy.io import savemat

    png(root / "test" / "1_1.png", 30, 12)
    png(root / "test" / "2_1.png", 32, 12)
    dt = [("ImgName", "O"), ("GroundTruth", "O"), ("smallLexi", "O"), ("mediumLexi", "O")]
    arr = np.zeros((1, 3), dtype=dt)
    small = np.array([["PRIVATE"], ["HELLO"], ["WORLD"]], dtype=object)  # a cell array, as MATLAB stores it
    medium = np.array([["PRIVATE"], ["HELLO"], ["WORLD"], ["HELP"]], dtype=object)
    arr[0, 0] = ("test/1_1.png", "PRIVATE", small.T, medium.T)
    arr[0, 1] = ("test/2_1.png", "HELLO", small.T, medium.T)
    arr[0, 2] = ("test/3_1.png", "MISSING", small.T, medium.T)
    savemat(root / "testdata.mat", {"testdata": arr})
    return root


def make_iiit5k_charbound(root: Path) -> Path:
    """IIIT5K's `testCharBound.mat` as distributed: a 1×N struct `testCharBound` with ImgName, chars (the word,
    case as on the image) and charBB (one x,y,w,h row per character, doubles); no GroundTruth, no lexicons."""
    from scipy.io import savemat

    png(root / "test" / "1_1.png", 30, 12)
    png(root / "test" / "2_1.png", 32, 12)
    arr = np.zeros((1, 3), dtype=[("ImgName", "O"), ("chars", "O"), ("charBB", "O")])
    for k, (name, word) in enumerate([("test/1_1.png", "Private"), ("test/2_1.png", "HELLO"),
                                      ("test/3_1.png", "Missing")]):
        boxes = np.array([[4.0 * i, 1.0, 4.0, 10.0] for i in range(len(word))])  # n×4
        arr[0, k] = (name, word, boxes)
    savemat(root / "testCharBound.mat", {"testCharBound": arr})
    return root


SVT_XML = """<?xml version="1.0" encoding="utf-8"?>
<tagset>
  <image>
    <imageName>img/18_01.jpg</imageName>
    <address>1 Main St</address>
    <lex>DOOR,CAFE,PUB</lex>
    <Resolution x="60" y="40"/>
    <taggedRectangles>
      <taggedRectangle height="10" width="20" x="5" y="4"><tag>DOOR</tag></taggedRectangle>
      <taggedRectangle height="30" width="30" x="45" y="20"><tag>CAFE</tag></taggedRectangle>
      <taggedRectangle height="5" width="5" x="70" y="50"><tag>GONE</tag></taggedRectangle>
    </taggedRectangles>
  </image>
</tagset>
"""


def make_svt(root: Path) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    Image.fromarray(page_array(60, 40)).convert("RGB").save(root / "img" / "18_01.jpg", quality=95)
    (root / "test.xml").write_text(SVT_XML, encoding="utf-8")
    return root


WORDS_TXT = """#--- words.txt ---------------------------------------------------------------#
#
# format: a01-000u-00-00 ok 154 1 408 768 27 51 AT A
#
#     1               -> number of components for this word
#
a01-000u-00-00 ok 154 408 768 27 51 AT A
a01-000u-00-01 err 154 507 766 213 48 NN MOVE
a01-000u-00-02 ok 154 796 764 70 50 TO to by
a01-117-05-02 err 176 -1 -1 -1 -1 , ,
b01-000-00-00 ok 154 408 768 27 51 AT B
"""

LINES_TXT = """#--- lines.txt ---------------------------------------------------------------#
#
# format: a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop|Mr.|Gaitskell|from
#
a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop|Mr.|Gaitskell|from
a01-000u-01 err 156 19 395 932 1850 105 nominating|any|more|Labour
b01-000-00 ok 154 19 408 746 1661 89 other|form
"""


def make_iam(root: Path) -> Path:
    (root / "ascii").mkdir(parents=True, exist_ok=True)
    (root / "ascii" / "words.txt").write_text(WORDS_TXT)
    (root / "ascii" / "lines.txt").write_text(LINES_TXT)
    for wid in ("a01-000u-00-00", "a01-000u-00-01", "a01-000u-00-02", "a01-117-05-02", "b01-000-00-00"):
        p = wid.split("-")
        png(root / "words" / p[0] / f"{p[0]}-{p[1]}" / f"{wid}.png", 16, 10)
    for lid in ("a01-000u-00", "a01-000u-01", "b01-000-00"):
        p = lid.split("-")
        png(root / "lines" / p[0] / f"{p[0]}-{p[1]}" / f"{lid}.png", 40, 10)
    (root / "splits").mkdir()
    (root / "splits" / "testset.txt").write_text("a01-000u-00\na01-000u-01\n")
    (root / "splits" / "forms.txt").write_text("b01-000\n")
    return root


RIMES_XML = """<?xml version="1.0" encoding="utf-8"?>
<DocumentList>
  <SinglePage FileName="images/eval2011-1.png" Index="0">
    <Paragraph Value="x">
      <Line Bottom="20" Left="-5" Right="30" Top="2" Value="Je  souhaiterais   vous"/>
      <Line Bottom="10" Left="50" Right="40" Top="30" Value="Monsieur &amp;quot;X&amp;quot; &amp; Cie"/>
      <Line Bottom="45" Left="10" Right="70" Top="35" Value="  "/>
      <Line Bottom="38" Left="0" Right="70" Top="32" Value="caf&#233;"/>
    </Paragraph>
  </SinglePage>
</DocumentList>
"""


def make_rimes(root: Path) -> Path:
    png(root / "images_gray" / "eval2011-1.png", 60, 40)
    (root / "eval_2011_annotated.xml").write_text(RIMES_XML, encoding="utf-8")
    png(root / "data_test" / "lot_1" / "w1.tiff", 16, 10)
    png(root / "data_test" / "lot_1" / "w2.png", 18, 10)
    (root / "grount_truth_test_icdar2011.txt").write_bytes(
        "\ufefflot_1/w1.tiff Madame\r\nlot_1/w2.png été\r\nlot_1/w3.png manque\r\n".encode())
    return root


# --------------------------------------------------------------------------------------------- CASIA-HWDB
# Binary files written field by field in the real layouts (little-endian, 2-byte GB codes high byte first,
# 8-bit bitmaps without row padding). Each bitmap is page_array(w, h, value), so pixels can be checked exactly.

def _u16(n: int) -> bytes:
    return n.to_bytes(2, "little")


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "little")


def gnt_record(code: bytes, bitmap: np.ndarray) -> bytes:
    """sample size (uint32, the whole record) | tag code (2 bytes as stored) | width, height (uint16) | bitmap."""
    h, w = bitmap.shape
    return _u32(10 + w * h) + code + _u16(w) + _u16(h) + bitmap.astype(np.uint8).tobytes()


def dgrl_page(lines: list[tuple[list[bytes], int, int, np.ndarray]], *, page: tuple[int, int] = (40, 30),
              illustration: bytes = b"CASIA-HWDB2.0 \xd7\xd6\xd0\xd0\x00", code_type: bytes = b"GB",
              code_length: int = 2, bpp: int = 8) -> bytes:
    """A .dgrl page: header (size, "DGRL", illustration, code type, code length, bits per pixel), page height,
    width, number of lines, then per line: number of characters, codes, top, left, height, width, bitmap.
    `lines` = (codes, top, left, bitmap) each; `page` = (height, width)."""
    out = bytearray(_u32(36 + len(illustration)) + b"DGRL\x00\x00\x00\x00" + illustration)
    out += code_type.ljust(20, b"\x00") + _u16(code_length) + _u16(bpp)
    out += _u32(page[0]) + _u32(page[1]) + _u32(len(lines))
    for codes, top, left, bitmap in lines:
        h, w = bitmap.shape
        out += _u32(len(codes)) + b"".join(codes) + _u32(top) + _u32(left) + _u32(h) + _u32(w)
        out += bitmap.astype(np.uint8).tobytes()
    return bytes(out)


# file -> records (tag code as stored, width, height, pixel value): labels 啊 丂 亍 | 座 ７ | 啊
CASIA_GNT = {
    "HWDB1.1trn_gnt/1001-c.gnt": [
        (b"\xb0\xa1", 5, 4, 10),   # 啊, the first level-1 character; odd width
        (b"\xff\xff", 3, 3, 20),   # the garbage mark: dropped and counted
        (b"\x81\x40", 7, 3, 30),   # 丂: GBK only (not in GB2312)
        (b"\xd8\xa1", 1, 1, 40),   # 亍: GB2312 level 2 (outside gb2312-l1)
    ],
    "HWDB1.1trn_gnt/1002-c.gnt": [
        (b"\xa1\xff", 2, 2, 50),   # no GB2312/GBK code: dropped and counted
        (b"\xd7\xf9", 9, 5, 60),   # 座, the last level-1 character
        (b"\xa3\xb7", 3, 5, 250),  # ７ (full-width seven), as HWDB1.x stores its symbols; pixels wrap past 255
    ],
    "HWDB1.1tst_gnt/1241-c.gnt": [(b"\xb0\xa1", 3, 2, 80)],
}
CASIA_GNT_LABELS = ["啊", "丂", "亍", "座", "７", "啊"]

# file -> lines (codes as stored, top, left, width, height, pixel value)
CASIA_DGRL = {  # in the order read: sorted paths (HWDB2.0Test before HWDB2.0Train)
    "HWDB2.0Test/002-P17.dgrl": [
        ([b"\xff\xff", b"\xff\xff"], 0, 0, 3, 2, 40),  # only garbage marks: empty label, dropped (counted)
        ([b"\xa1\xff", b"\xb0\xa1"], 5, 0, 5, 3, 50),  # an undecodable code, removed (counted): 啊
    ],
    "HWDB2.0Train/001-P16.dgrl": [
        ([b"\xb0\xa1", b"\xa3\xac", b"2\x00", b"\x81\x40"], 2, 3, 7, 3, 10),  # 啊，2丂: ASCII + NUL, GBK only
        ([b"\xd7\xf9", b"\xff\xff", b"\xb0\xa1"], 8, 1, 5, 4, 20),  # 座?啊: a garbage mark, removed (counted)
        ([b"\xd8\xa1"], 14, 2, 1, 2, 30),  # 亍, one pixel wide
    ],
}
CASIA_DGRL_LABELS = ["啊", "啊，2丂", "座啊", "亍"]


def make_casia_gnt(root: Path) -> Path:
    for rel, records in CASIA_GNT.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(gnt_record(code, page_array(w, h, v)) for code, w, h, v in records))
    return root


def make_casia_dgrl(root: Path) -> Path:
    for rel, lines in CASIA_DGRL.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(dgrl_page([(codes, top, left, page_array(w, h, v))
                                    for codes, top, left, w, h, v in lines]))
    return root
