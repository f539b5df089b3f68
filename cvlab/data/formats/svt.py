"""`svt`: Street View Text as unpacked (`svt1/`): `train.xml`/`test.xml` and full street images in `img/`.
Word samples are crops of `<taggedRectangle>` boxes; boxes leaving the image are clamped (and counted), and
each image's `<lex>` (50 words) is the lexicon of its words (SVT-50)."""

from __future__ import annotations

from .base import ListDataset, clamp_box, image_size, need_dir, need_file, numbers, parse_xml, under

LAYOUT = "ROOT/test.xml (train.xml) and ROOT/img/*.jpg, as in svt1/"


class SvtDataset(ListDataset):
    GROUP_KEYS = ("image",)  # words are boxes in street images

    def index(self) -> None:
        spec = self.spec
        root = need_dir(spec.root_path, LAYOUT)
        xml = need_file(under(root, spec.labels, f"{spec.split}.xml"), LAYOUT)
        base = under(root, spec.images, ".")
        for image in parse_xml(xml).iter("image"):
            name = (image.findtext("imageName") or "").strip()
            if not name:
                self.malformed(xml, 0, "<image> without <imageName>")
                continue
            page = base / name
            rects = image.findall("taggedRectangles/taggedRectangle")
            if not page.is_file():
                self.report.drop("image file missing", f"{xml.name}: {page}", len(rects))
                continue
            lex = [w.strip() for w in (image.findtext("lex") or "").split(",") if w.strip()]
            size = image_size(str(page))  # header only; the <Resolution> tag is not always right
            if size is None:
                self.report.drop("page image unreadable", f"{xml.name}: {page}", len(rects))
                continue
            width, height = size
            for r in rects:
                label = (r.findtext("tag") or "").strip()
                box = numbers(r.get(k) for k in ("x", "y", "width", "height"))
                if box is None:
                    self.malformed(xml, 0, f"{name}: taggedRectangle without finite numeric x/y/width/height")
                    continue
                x, y, w, h = box
                crop, clamped = clamp_box((x, y, x + w, y + h), width, height)
                where = f"{name} {label!r} {[round(v) for v in box]}"
                if crop[2] <= crop[0] or crop[3] <= crop[1]:
                    self.report.drop("box empty after clamping to the image", where)
                    continue
                if not label:
                    self.report.drop("empty label", where)
                    continue
                if clamped:
                    self.report.adjust("box clamped to the image", where)
                self.add(page, label, crop, {"50": lex} if lex else None)
