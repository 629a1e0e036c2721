"""The worked example of docs/api.md: after `make repro`, from the project's root, `python docs/api_example.py`.

Loads the distilled set, trains one net on it with the evaluation protocol, calibrates an energy-score
detector at 95% TPR on half of the InD test images, then reports accuracy on the other half and the share
of each OOD set the detector rejects."""

import torch

from trustdd import api
from trustdd.data.ood import OODSets
from trustdd.data.prepared import Prepared

s = api.load("data/distilled/distilled.pt")
print(f"{s.method} set of {s.dataset}: {tuple(s.images.shape)} InD images, {tuple(s.outliers.shape)} outliers, "
      f"learned lr {s.lr:.4f}, net {s.net.name} width {s.net.width} depth {s.net.depth}")
print("classes:", ", ".join(s.classes))

net = api.train(s, seed=0)  # net 0 of the evaluate stage's distilled set (300 epochs)

test = Prepared.load()  # the pipeline's InD test split, uint8
x, y = test.test_x, test.test_y
calib, held = slice(0, x.shape[0] // 2), slice(x.shape[0] // 2, None)
with torch.no_grad():
    accuracy = (net(s.to_inputs(x[held])).argmax(1) == y[held]).float().mean()
print(f"accuracy on {x[held].shape[0]} held-out test images: {100 * float(accuracy):.2f}%")

detector = api.Detector(net, s, "energy").calibrate(x[calib], tpr=0.95)
print(f"energy threshold at 95% TPR: {detector.threshold:.4f}")
print(f"InD held-out images rejected: {100 * float(detector.is_ood(x[held]).float().mean()):.2f}%")
for name, images in OODSets.load().images.items():
    print(f"{name:>15} rejected: {100 * float(detector.is_ood(images).float().mean()):.2f}%")
