# Writes lib/data/imagenet-classes.json: the 1000 ImageNet-1k class names in index order, taken from Debian's
# python3-torchvision (the categories of its pretrained weights' metadata). Run: /usr/bin/python3 scripts/make_imagenet_labels.py
# Not for: anything at run time (the library reads the committed JSON).
import json
import os

import torchvision.models as models

categories = models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
assert len(categories) == 1000 and all(isinstance(c, str) and c for c in categories), "unexpected category list"
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib", "data", "imagenet-classes.json")
with open(out, "w", encoding="utf-8") as f:
    json.dump(categories, f, indent=0, ensure_ascii=False)
    f.write("\n")
print(f"wrote {len(categories)} class names to {os.path.normpath(out)}")
